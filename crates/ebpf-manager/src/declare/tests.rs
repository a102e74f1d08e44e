//! Declarations read from TOML and JSON, written back, and refused with the key and line.

use super::*;
use crate::codec::duration;
use crate::{
    ConstantEditor, KprobeAttachMethod, MapRoute, MapSpecEditor, ProbeIdentificationPair as Id,
    ProbesSelector, TailCallRoute,
};
use std::time::Duration;

const FULL: &str = r#"
[[probes]]
uid = "mkdir"
ebpf_func_name = "kprobe_vfs_mkdir"
kprobe_attach_method = "tracefs"
kprobe_max_active = 16
probe_retry = 3
probe_retry_delay = "20ms"

[[probes]]
ebpf_func_name = "xdp_ingress"
if_name = "eth0"
netns = "/var/run/netns/blue"
network_direction = "ingress"
xdp_attach_mode = "skb"

[[maps]]
name = "hits"
pin_path = "/sys/fs/bpf/hits"

[[perf_maps]]
map_name = "perf_events"
perf_ring_pages = 16
wakeup_events = 8

[[ring_buffers]]
map_name = "ring_events"
poll_timeout = "100ms"

[options]
excluded_functions = ["kretprobe_vfs_mkdir"]
default_probe_retry_delay = "1s"
reader_stop_timeout = "500ms"
enable_stats = true
kernel_btf = "/var/lib/btf/vmlinux"

[[options.activated_probes]]
all_of = [{ probe = { uid = "mkdir", ebpf_func_name = "kprobe_vfs_mkdir" } }]

[[options.activated_probes]]
best_effort = [{ probe = { ebpf_func_name = "xdp_ingress" } }]

[[options.constant_editors]]
name = "filter_tid"
value = { u32 = 42 }

[[options.constant_editors]]
name = "raw"
value = [1, 2]
allow_missing = true

[[options.map_spec_editors]]
name = "hits"
max_entries = 64

[[options.tail_call_router]]
prog_array_name = "jump_table"
key = 1
probe_identification_pair = { ebpf_func_name = "tail_target" }

[[options.map_router]]
routing_map_name = "outer"
key = 0
map_name = "inner_a"
"#;

#[test]
fn a_full_toml_declaration_is_read() {
    let d = Declaration::from_toml(FULL).unwrap();
    let mkdir = &d.probes[0];
    assert_eq!(mkdir.id(), Id::new("mkdir", "kprobe_vfs_mkdir"));
    assert_eq!(mkdir.kprobe_attach_method, KprobeAttachMethod::Tracefs);
    assert_eq!(mkdir.kprobe_max_active, 16);
    assert_eq!(mkdir.probe_retry_delay, Duration::from_millis(20));
    let xdp = &d.probes[1];
    assert_eq!(xdp.uid, "");
    assert_eq!(
        xdp.netns,
        Some(crate::Netns::Path("/var/run/netns/blue".into()))
    );
    assert_eq!(xdp.xdp_attach_mode, crate::XdpAttachMode::Skb);
    assert_eq!(
        d.maps[0].pin_path.as_deref(),
        Some("/sys/fs/bpf/hits".as_ref())
    );
    assert_eq!(d.perf_maps[0].perf_ring_pages, 16);
    assert!(d.perf_maps[0].data_handler.is_none());
    assert_eq!(
        d.ring_buffers[0].poll_timeout,
        Some(Duration::from_millis(100))
    );
    let o = &d.options;
    assert_eq!(o.excluded_functions, ["kretprobe_vfs_mkdir"]);
    assert_eq!(o.default_probe_retry_delay, Duration::from_secs(1));
    assert_eq!(o.reader_stop_timeout, Duration::from_millis(500));
    assert!(o.enable_stats);
    assert!(
        matches!(&o.kernel_btf, Some(crate::KernelTypes::File(p)) if p == std::path::Path::new("/var/lib/btf/vmlinux"))
    );
    assert_eq!(
        o.activated_probes,
        [
            ProbesSelector::AllOf(vec![ProbesSelector::Probe(Id::new(
                "mkdir",
                "kprobe_vfs_mkdir"
            ))]),
            ProbesSelector::BestEffort(vec![ProbesSelector::Probe(Id::new("", "xdp_ingress"))]),
        ]
    );
    assert_eq!(
        o.constant_editors[0],
        ConstantEditor::new("filter_tid", 42u32)
    );
    assert_eq!(o.constant_editors[1].value, [1, 2]);
    assert!(o.constant_editors[1].allow_missing);
    assert_eq!(
        o.map_spec_editors[0],
        MapSpecEditor {
            name: "hits".into(),
            max_entries: Some(64),
            ..Default::default()
        }
    );
    let route: &TailCallRoute = &o.tail_call_router[0];
    assert_eq!(route.probe_identification_pair, Id::new("", "tail_target"));
    let route: &MapRoute = &o.map_router[0];
    assert_eq!((route.routing_map_name.as_str(), route.key), ("outer", 0));
    let (manager, options) = d.clone().into_manager();
    assert_eq!(manager.probes.len(), 2);
    assert_eq!(options.excluded_functions, d.options.excluded_functions);
}

#[test]
fn a_declaration_round_trips_through_toml_and_json() {
    let d = Declaration::from_toml(FULL).unwrap();
    let toml = d.to_toml().unwrap();
    let json = d.to_json().unwrap();
    let from_toml = Declaration::from_toml(&toml).unwrap();
    let from_json = Declaration::from_json(&json).unwrap();
    // Equal as written: every field survives both formats.
    assert_eq!(from_toml.to_json().unwrap(), json);
    assert_eq!(from_json.to_toml().unwrap(), toml);
    assert!(toml.contains("probe_retry_delay = \"20ms\""), "{toml}");
    assert!(
        json.contains("\"kprobe_attach_method\": \"tracefs\""),
        "{json}"
    );
}

#[test]
fn bad_declarations_name_the_key_and_the_line() {
    let cases: [(&str, &str, usize, &str); 6] = [
        (
            "[[probes]]\nuid = \"a\"\nebpf_func = \"x\"\n",
            "TOML",
            3,
            "unknown field `ebpf_func`",
        ),
        (
            "[[probes]]\nebpf_func_name = \"x\"\nkprobe_attach_method = \"pmu\"\n",
            "TOML",
            3,
            "unknown variant `pmu`",
        ),
        (
            "[options]\nreader_stop_timeout = \"5\"\n",
            "TOML",
            2,
            "duration `5` has no unit",
        ),
        (
            "[[options.constant_editors]]\nname = \"n\"\nvalue = { u24 = 1 }\n",
            "TOML",
            3,
            "one sized integer",
        ),
        (
            "[options]\nenable_stats = 1\n",
            "TOML",
            2,
            "expected a boolean",
        ),
        (
            "{\n  \"probes\": [\n    { \"uid\": \"a\", \"kprobe_max_active\": -1 }\n  ]\n}",
            "JSON",
            3,
            "invalid value: integer `-1`",
        ),
    ];
    for (text, format, line, message) in cases {
        let err = if format == "TOML" {
            Declaration::from_toml(text)
        } else {
            Declaration::from_json(text)
        }
        .unwrap_err();
        match &err {
            Error::InvalidDeclaration {
                format: f,
                line: l,
                message: m,
                ..
            } => {
                assert_eq!((*f, *l), (format, line), "{err}");
                assert!(m.contains(message), "{m}");
            }
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn what_a_file_cannot_hold_is_refused_when_written() {
    let mut d = Declaration::default();
    d.options.kernel_btf = Some(crate::KernelTypes::Parsed(std::sync::Arc::new(
        aya::Btf::new(),
    )));
    let err = d.to_toml().unwrap_err();
    assert!(err.to_string().contains("kernel_btf: parsed BTF"), "{err}");
}

#[test]
fn durations_are_read_and_written_with_their_unit() {
    for (text, d) in [
        ("40ns", Duration::from_nanos(40)),
        ("100us", Duration::from_micros(100)),
        ("250ms", Duration::from_millis(250)),
        ("5s", Duration::from_secs(5)),
        ("2m", Duration::from_secs(120)),
    ] {
        assert_eq!(duration::parse(text), Ok(d));
    }
    assert_eq!(duration::format(Duration::from_millis(1500)), "1500ms");
    assert_eq!(duration::format(Duration::from_secs(3)), "3s");
    assert!(duration::parse("5 parsecs").is_err());
    assert!(duration::parse("99999999999999999999s").is_err());
}
