use super::*;

#[test]
fn each_cause_is_printed_once_and_the_errno_is_found() {
    let sys = SysError {
        call: "perf_event_open",
        io_error: io::Error::from_raw_os_error(libc::ESRCH),
    };
    let err = Error::Attach {
        id: ProbeIdentificationPair::new("u", "uprobe_add"),
        hook: "add".into(),
        method: crate::AttachMethod::Uprobe,
        source: Box::new(io::Error::new(io::ErrorKind::NotFound, sys)),
    };
    let display = err.to_string();
    assert!(!display.contains("failed: "), "{display}");
    let report = err.report().to_string();
    assert_eq!(
        report,
        format!(
            "{display}: `perf_event_open` failed: {}",
            io::Error::from_raw_os_error(libc::ESRCH)
        )
    );
    assert_eq!(err.errno(), Some(libc::ESRCH));
    // A cause whose text its parent already shows is not repeated.
    let err = Error::ReaderStart {
        map: "events".into(),
        kind: "perf map",
        source: Box::new(io::Error::other("the inner cause")),
    };
    assert_eq!(
        err.report().to_string(),
        "perf map `events`: starting its reader failed: the inner cause"
    );
    assert_eq!(err.errno(), None);
}
