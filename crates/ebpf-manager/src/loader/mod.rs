//! From object bytes to an [`aya::Ebpf`], with constant and map editors applied, and from a
//! program to a loaded program, with errors that name the probe.

use std::{
    os::fd::AsFd,
    path::{Path, PathBuf},
    sync::Arc,
};

use aya::{Ebpf, EbpfLoader};

mod errors;
mod program;

pub(crate) use program::{from_pin, is_loaded, load_program, type_name, unload};

use crate::{
    kernel::{self, instance::PrivateDir},
    pipeline::{Constants, Prepared},
    Error, KernelTypes, MapEditor, MapSpecEditor, Result,
};

/// What a BTF file's header says against its length: aya reports a truncated file as
/// "error parsing BTF header", which does not say what is wrong.
fn check_btf_header(bytes: &[u8]) -> std::result::Result<(), String> {
    let field = |at: usize| {
        bytes
            .get(at..at + 4)
            .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")) as u64)
    };
    if bytes.get(..2) != Some(&[0x9f, 0xeb]) {
        return Err(if bytes.len() < 2 {
            format!("not a BTF file: {} bytes", bytes.len())
        } else {
            "not a little-endian BTF file (no 0xeB9F magic)".into()
        });
    }
    let (Some(hdr), Some(type_off), Some(type_len), Some(str_off), Some(str_len)) =
        (field(4), field(8), field(12), field(16), field(20))
    else {
        return Err(format!(
            "truncated: {} bytes, shorter than a BTF header (24)",
            bytes.len()
        ));
    };
    let needed = hdr + (type_off + type_len).max(str_off + str_len);
    if (bytes.len() as u64) < needed {
        return Err(format!(
            "truncated: its header describes {needed} bytes, the file has {}",
            bytes.len()
        ));
    }
    Ok(())
}

/// The kernel's BTF, parsed on first use (it takes 15 ms on the host, 266 ms in a TCG guest)
/// and kept until the manager releases it; or the BTF the user gave
/// ([`Options::kernel_btf`](crate::Options)), kept for the manager's life. With it, aya's
/// loader: `EbpfLoader::new` parses the kernel's BTF too, so one loader serves every load of
/// the manager (the object, per-probe constant copies, clones) until it is released.
#[derive(Debug, Default)]
pub(crate) struct KernelBtf {
    parsed: Option<aya::Btf>,
    given: Option<Arc<aya::Btf>>,
    loader: Option<EbpfLoader<'static>>,
    /// The maps the kept loader was told to pin: aya cannot forget a pin path, so a load that
    /// does not pin them all takes a fresh loader.
    loader_pins: std::collections::HashSet<String>,
    /// The first loader, made on a thread while `init` prepares the object.
    ahead: Ahead,
}

/// aya's loader made on a thread of its own: `EbpfLoader::new` parses the kernel's BTF (15 ms
/// on the host, 70 to 270 ms in a TCG guest), which then overlaps the object's preparation
/// instead of following it. Taken by the first load; joined when dropped, so no thread outlives
/// a failed `init`.
#[derive(Debug, Default)]
pub(crate) struct Ahead(Option<std::thread::JoinHandle<EbpfLoader<'static>>>);

impl Ahead {
    /// Starts making aya's loader.
    pub(crate) fn start() -> Self {
        let spawned = std::thread::Builder::new()
            .name("ebpfm-btf".into())
            .spawn(parse_loader)
            .inspect_err(|e| log::debug!("aya's loader made on first use: {e}"));
        Self(spawned.ok())
    }

    /// The loader made ahead (waiting for it, as kernel BTF time), or a new one.
    fn take(&mut self) -> EbpfLoader<'static> {
        let Some(handle) = self.0.take() else {
            return new_loader();
        };
        match crate::phases::time(crate::phases::Phase::KernelBtf, || handle.join()) {
            Ok(loader) => loader,
            // The thread panicked (aya's parse never should): make it here instead.
            Err(_) => new_loader(),
        }
    }
}

impl Drop for Ahead {
    fn drop(&mut self) {
        if let Some(handle) = self.0.take() {
            let _ = handle.join();
        }
    }
}

static PARSES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// How many times this process parsed the kernel's BTF through the manager (its own parses and
/// aya's, one per `EbpfLoader`).
pub(crate) fn kernel_btf_parses() -> usize {
    PARSES.load(std::sync::atomic::Ordering::Relaxed)
}

fn new_loader() -> EbpfLoader<'static> {
    crate::phases::time(crate::phases::Phase::KernelBtf, parse_loader)
}

fn parse_loader() -> EbpfLoader<'static> {
    PARSES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    EbpfLoader::new()
}

/// `name` with a static lifetime, leaked once per distinct name per process: a kept aya
/// loader borrows its map names for as long as it lives. Map names are few (those of the
/// objects the process loads).
fn intern(name: &str) -> &'static str {
    static NAMES: std::sync::OnceLock<std::sync::Mutex<std::collections::HashSet<&'static str>>> =
        std::sync::OnceLock::new();
    let mut names = NAMES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(&known) = names.get(name) {
        return known;
    }
    let leaked: &'static str = Box::leak(name.to_owned().into_boxed_str());
    names.insert(leaked);
    leaked
}

impl KernelBtf {
    /// The user's BTF, parsed now when it is a file, and aya's loader made `ahead`.
    pub(crate) fn given(types: Option<&KernelTypes>, ahead: Ahead) -> Result<Self> {
        let given = match types {
            None => None,
            Some(KernelTypes::Parsed(btf)) => Some(btf.clone()),
            Some(KernelTypes::File(path)) => {
                let refuse = |reason: String| Error::InvalidOption {
                    option: "kernel_btf".into(),
                    reason: format!("{}: {reason}", path.display()),
                };
                let bytes = std::fs::read(path).map_err(|e| refuse(e.to_string()))?;
                check_btf_header(&bytes).map_err(refuse)?;
                Some(Arc::new(
                    aya::Btf::parse(&bytes, aya::Endianness::default()).map_err(|e| {
                        refuse(format!(
                            "not a BTF file aya can read: {}",
                            crate::error::chain(&e)
                        ))
                    })?,
                ))
            }
        };
        Ok(Self {
            parsed: None,
            given,
            ahead,
            ..Default::default()
        })
    }

    /// Whether the user gave the BTF to relocate against (`Options::kernel_btf`).
    pub(crate) fn is_given(&self) -> bool {
        self.given.is_some()
    }

    /// Where the BTF comes from, for messages.
    pub(crate) fn source(&self) -> std::path::PathBuf {
        match &self.given {
            Some(_) => "the BTF of Options::kernel_btf".into(),
            None => "/sys/kernel/btf/vmlinux".into(),
        }
    }

    pub(crate) fn get(&mut self) -> Result<&aya::Btf> {
        if self.given.is_none() {
            self.running()?;
        }
        Ok(match &self.given {
            Some(given) => given,
            None => self.parsed.as_ref().expect("parsed above"),
        })
    }

    /// The running kernel's BTF, whatever BTF the user gave for CO-RE: `__ksym` ids are the
    /// running kernel's.
    pub(crate) fn running(&mut self) -> Result<&aya::Btf> {
        if self.parsed.is_none() {
            PARSES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let parsed =
                crate::phases::time(crate::phases::Phase::KernelBtf, aya::Btf::from_sys_fs);
            let btf = parsed.map_err(|e| Error::Io {
                path: "/sys/kernel/btf/vmlinux".into(),
                source: std::io::Error::other(e),
            })?;
            self.parsed = Some(btf);
        }
        Ok(self.parsed.as_ref().expect("just set"))
    }

    /// Frees the parsed kernel BTF and aya's loader (the user's BTF stays: it cannot be
    /// parsed again).
    pub(crate) fn release(&mut self) {
        self.parsed = None;
        self.loader = None;
        self.loader_pins.clear();
        self.ahead = Ahead::default();
    }

    /// Whether the kernel's BTF is parsed and held (by the manager or its aya loader).
    pub(crate) fn is_held(&self) -> bool {
        self.parsed.is_some() || self.loader.is_some() || self.ahead.0.is_some()
    }
}

/// What every load of a manager shares: the prepared object and how aya loads it.
#[derive(Debug, Default)]
pub(crate) struct Source {
    pub(crate) object: Prepared,
    pub(crate) verifier_log_level: Option<aya::VerifierLogLevel>,
    /// [`Options::map_pin_directory`](crate::Options::map_pin_directory).
    pub(crate) map_pin_directory: Option<PathBuf>,
}

impl Source {
    /// Where each map the object pins by name lives, unless a declared pin or a map editor
    /// places it elsewhere.
    pub(crate) fn pins_by_name(&self, elsewhere: &[&str]) -> Vec<MapEditor> {
        let dir = self
            .map_pin_directory
            .as_deref()
            .unwrap_or(Path::new(kernel::instance::BPFFS));
        self.object
            .pinned_by_name()
            .iter()
            .filter(|name| !elsewhere.contains(&name.as_str()))
            .map(|name| MapEditor::pinned(name, dir.join(name)))
            .collect()
    }
}

/// A copy of `object` aligned for ELF parsing, when it is not already: object's ELF reader needs
/// 8-byte alignment, which a `Vec<u8>` from the allocator has.
pub(crate) fn aligned_copy(object: &[u8]) -> Option<Vec<u8>> {
    (!(object.as_ptr() as usize).is_multiple_of(8)).then(|| object.to_vec())
}

/// Loads `source` with `constants` and the maps of `maps` in place of the object's.
pub(crate) fn load_object(
    source: &Source,
    btf: &mut KernelBtf,
    constants: Constants<'_, '_>,
    maps: &[MapEditor],
    specs: &[MapSpecEditor],
) -> Result<Ebpf> {
    load_object_pinning(source, btf, constants, maps, specs, &[])
}

/// [`load_object`], with `pinned` maps pinned at their path: reused when a pin exists there,
/// created and pinned otherwise.
pub(crate) fn load_object_pinning(
    source: &Source,
    btf: &mut KernelBtf,
    constants: Constants<'_, '_>,
    maps: &[MapEditor],
    specs: &[MapSpecEditor],
    pinned: &[MapEditor],
) -> Result<Ebpf> {
    crate::fault::check("object")?;
    // Open maps are reused by pin (aya 0.14 has no other way): pinned for this load only.
    let live = LivePins::pin(maps)?;
    let maps = live.editors.as_slice();
    let (object, constants) = crate::phases::time(crate::phases::Phase::Instantiate, || {
        source.object.instantiate(constants)
    })?;
    // A kept loader keeps its settings from load to load: every load sets the same max entries
    // and overrides the pin path of every map it pins. Globals aya must set (in `.bss`) and
    // the user's BTF need a loader of their own.
    let pins: std::collections::HashSet<String> =
        pinned.iter().chain(maps).map(|m| m.name.clone()).collect();
    let ebpf = if constants.is_empty() && btf.given.is_none() {
        if !btf.loader_pins.is_subset(&pins) {
            btf.loader = None;
            btf.loader_pins.clear();
        }
        if btf.loader.is_none() {
            btf.loader = Some(btf.ahead.take());
        }
        let loader = btf.loader.as_mut().expect("just set");
        btf.loader_pins.extend(pins);
        configure_and_load(loader, source, &object, maps, specs, pinned)?
    } else {
        let mut own: EbpfLoader<'_> = btf.ahead.take();
        if let Some(user) = btf.given.as_deref() {
            own.btf(Some(user));
        }
        for editor in &constants {
            own.override_global(editor.name.as_str(), editor.value.as_slice(), true);
        }
        configure_and_load(&mut own, source, &object, maps, specs, pinned)?
    };
    // aya ignores editors of maps that do not exist: a typo must not pass silently.
    for name in specs
        .iter()
        .map(|e| &e.name)
        .chain(maps.iter().chain(pinned).map(|e| &e.name))
    {
        if ebpf.map(name).is_none() {
            return Err(Error::InvalidOption {
                option: format!("map editor `{name}`"),
                reason: format!(
                    "the object has no map `{name}` (it has: {})",
                    ebpf.maps().map(|(n, _)| n).collect::<Vec<_>>().join(", ")
                ),
            });
        }
    }
    Ok(ebpf)
}

/// Sets what every load sets on `loader`, then loads `object`.
fn configure_and_load(
    loader: &mut EbpfLoader<'_>,
    source: &Source,
    object: &[u8],
    maps: &[MapEditor],
    specs: &[MapSpecEditor],
    pinned: &[MapEditor],
) -> Result<Ebpf> {
    if let Some(level) = source.verifier_log_level {
        loader.verifier_log_level(level);
    }
    // Go creates every map of the collection: the types aya has no wrapper for (task storage,
    // user ring buffer, arena, struct_ops) are reached as `Map::Unsupported` and by fd.
    loader.allow_unsupported_maps();
    if let Some(dir) = &source.map_pin_directory {
        loader.default_map_pin_directory(dir);
    }
    if let Some((map, entries)) = source.object.bypass_map() {
        loader.map_max_entries(intern(map), entries);
    }
    for pin in pinned {
        loader.map_pin_path(intern(&pin.name), pin.pin_path.clone());
    }
    for spec in specs {
        if let Some(n) = spec.max_entries {
            loader.map_max_entries(intern(&spec.name), n);
        }
    }
    // After the editors: the rounding is of their size.
    for (map, size) in source.object.rounded_rings() {
        loader.map_max_entries(intern(map), *size);
    }
    for editor in maps {
        // aya creates and pins a map when nothing is pinned at the path: refuse that, an
        // editor names a map that exists.
        if !editor.pin_path.exists() {
            return Err(Error::InvalidOption {
                option: format!("map editor `{}`", editor.name),
                reason: format!("nothing is pinned at {}", editor.pin_path.display()),
            });
        }
        loader.map_pin_path(intern(&editor.name), editor.pin_path.clone());
    }
    // The pipeline refuses what aya is known to panic on; a panic still inside aya is an error
    // of this object, not of the caller's process.
    let loaded = crate::phases::time(crate::phases::Phase::AyaLoad, || {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| loader.load(object)))
    })
    .map_err(|panic| Error::InvalidObject {
        reason: format!(
            "aya panicked while loading it: {}",
            crate::pipeline::panic_message(&panic)
        ),
    })?;
    let ebpf = loaded.map_err(|e| errors::load_error(e, object))?;
    let elsewhere: Vec<&str> = pinned.iter().chain(maps).map(|m| m.name.as_str()).collect();
    let by_name = source.pins_by_name(&elsewhere);
    let pinned: Vec<MapEditor> = pinned.iter().cloned().chain(by_name).collect();
    check_reused_maps(&ebpf, object, specs, &pinned, maps)?;
    Ok(ebpf)
}

/// aya reuses whatever is pinned at a map's path without looking at it: compare the kernel's
/// view of each pinned (declared, or by name) or edited map with the object's definition (type,
/// key and value sizes, flags; and max_entries for pins of the object's own maps).
fn check_reused_maps(
    ebpf: &Ebpf,
    object: &[u8],
    specs: &[MapSpecEditor],
    pinned: &[MapEditor],
    edited: &[MapEditor],
) -> Result<()> {
    if pinned.is_empty() && edited.is_empty() {
        return Ok(());
    }
    let Ok(obj) = aya_obj::Object::parse(object) else {
        return Ok(());
    };
    let reused = pinned
        .iter()
        .map(|m| (m, true))
        .chain(edited.iter().map(|m| (m, false)));
    for (m, own) in reused {
        let (Some(def), Some(map)) = (obj.maps.get(&m.name), ebpf.map(&m.name)) else {
            continue;
        };
        let mismatch = |mismatch: String| Error::PinnedMapMismatch {
            map: m.name.clone(),
            path: m.pin_path.clone(),
            mismatch,
        };
        let fd = crate::kernel::bpf_map::map_data(map).fd().as_fd();
        let Some(info) = kernel::bpf_map::map_fd_info(fd).ok().flatten() else {
            return Err(mismatch("it is not a map".into()));
        };
        let max_entries = specs
            .iter()
            .find(|s| s.name == m.name)
            .and_then(|s| s.max_entries)
            .unwrap_or(def.max_entries());
        // aya sizes perf event arrays by CPU count and ring buffers by pages itself.
        let sized_by_aya = matches!(def.map_type(), 4 | 27) || max_entries == 0;
        let expected = [
            ("map type", def.map_type(), Some(info.map_type)),
            ("key size", def.key_size(), Some(info.key_size)),
            ("value size", def.value_size(), Some(info.value_size)),
            ("flags", def.map_flags(), Some(info.flags)),
            (
                "max entries",
                max_entries,
                Some(info.max_entries).filter(|_| own && !sized_by_aya),
            ),
        ];
        for (what, declared, found) in expected {
            // aya creates perf event arrays with 4-byte values whatever they declare.
            let ignored = what == "value size" && def.map_type() == 4;
            if let Some(found) = found.filter(|&f| f != declared && !ignored) {
                return Err(mismatch(format!(
                    "its {what} is {found}, the object declares {declared}"
                )));
            }
        }
    }
    Ok(())
}

/// Creates a locked directory of this process's own under `/sys/fs/bpf`,
/// `ebpf_manager_<token>_<kind>_<n>` ([`kernel::instance`]): swept by the next start if this
/// process dies.
fn private_bpffs_dir(kind: &str) -> Result<PrivateDir> {
    PrivateDir::create(kind).map_err(|source| {
        let no_bpffs = source
            .get_ref()
            .is_some_and(|e| e.is::<kernel::instance::NoBpffs>());
        if no_bpffs {
            return Error::Bpffs {
                path: kernel::instance::BPFFS.into(),
                reason: format!(
                    "no bpffs for the pins through which the manager shares maps with object \
                     copies and clones: {}",
                    source
                        .get_ref()
                        .map(ToString::to_string)
                        .unwrap_or_default()
                ),
                fix: "run with CAP_SYS_ADMIN (a private instance, Linux 5.2), or mount bpffs: \
                      `mount -t bpf bpf /sys/fs/bpf`",
            };
        }
        Error::Io {
            path: Path::new(kernel::instance::BPFFS)
                .join(format!("{}_{kind}_*", kernel::instance::own_group())),
            source,
        }
    })
}

/// The editors of [`load_object_pinning`] with each open map
/// ([`MapEditor::map`](crate::MapEditor::map)) pinned in a private bpffs directory for the
/// time of one load; the pins and the directory go on drop.
struct LivePins {
    /// Removed on drop, with the pins in it.
    dir: Option<PrivateDir>,
    editors: Vec<MapEditor>,
}

impl LivePins {
    fn pin(editors: &[MapEditor]) -> Result<Self> {
        let mut live = Self {
            dir: None,
            editors: editors.to_vec(),
        };
        for editor in &mut live.editors {
            let Some(map) = editor.map.clone() else {
                continue;
            };
            let fail = |reason: String| Error::InvalidOption {
                option: format!("map editor `{}`", editor.name),
                reason,
            };
            // The name becomes a file name in the private directory.
            if editor.name.is_empty()
                || editor.name.contains('/')
                || editor.name == "."
                || editor.name == ".."
            {
                return Err(fail("not a map name".into()));
            }
            if live.dir.is_none() {
                live.dir = Some(private_bpffs_dir("editor")?);
            }
            let dir = live
                .dir
                .as_ref()
                .map(|d| d.path().to_owned())
                .unwrap_or_default();
            let owned = map
                .as_fd()
                .try_clone_to_owned()
                .map_err(|e| fail(format!("duplicating its fd: {e}")))?;
            // Also checks that the fd is a map: aya reads its info.
            let data = aya::maps::MapData::from_fd(owned).map_err(|e| {
                fail(format!(
                    "the fd is not a usable map: {}",
                    crate::error::chain(&e)
                ))
            })?;
            let path = dir.join(&editor.name);
            data.pin(&path).map_err(|e| {
                fail(format!(
                    "pinning it at {}: {}",
                    path.display(),
                    crate::error::chain(&e)
                ))
            })?;
            editor.pin_path = path;
        }
        Ok(live)
    }
}

/// Pins the maps of `ebpf` that a clone shares (every map but the `.rodata`/`.data`/`.bss`
/// sections, which hold the clone's own globals) in a private bpffs directory, removed on drop.
pub(crate) struct SharedMaps {
    /// Removed on drop, with the pins in it; the maps live on through their fds.
    dir: PrivateDir,
    pub(crate) editors: Vec<MapEditor>,
}

impl SharedMaps {
    /// `maps` are every map of the main object, by name, as init opened them: also those a
    /// reader took out of the object since, so a clone's records reach the running reader.
    pub(crate) fn pin(
        maps: &std::collections::HashMap<String, std::os::fd::OwnedFd>,
        except: &[MapEditor],
    ) -> Result<Self> {
        let dir = private_bpffs_dir("clone")?;
        let mut shared = Self {
            dir,
            editors: Vec::new(),
        };
        let mut names: Vec<&String> = maps.keys().collect();
        names.sort();
        for name in names {
            if name.starts_with('.') || except.iter().any(|e| &e.name == name) {
                continue;
            }
            let pin_path = shared.dir.path().join(name);
            let io = |source: std::io::Error| Error::Io {
                path: pin_path.clone(),
                source,
            };
            let owned = maps[name].try_clone().map_err(io)?;
            let data =
                aya::maps::MapData::from_fd(owned).map_err(|e| io(std::io::Error::other(e)))?;
            data.pin(&pin_path)
                .map_err(|e| io(std::io::Error::other(e)))?;
            shared.editors.push(MapEditor::pinned(name, pin_path));
        }
        Ok(shared)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_truncated_or_foreign_btf_file_says_so() {
        let mut btf = vec![0x9f, 0xeb, 1, 0];
        for field in [24u32, 0, 16, 16, 4] {
            btf.extend_from_slice(&field.to_le_bytes());
        }
        btf.extend_from_slice(&[0; 20]);
        assert_eq!(super::check_btf_header(&btf), Ok(()));
        assert_eq!(
            super::check_btf_header(&btf[..30]).unwrap_err(),
            "truncated: its header describes 44 bytes, the file has 30"
        );
        assert!(super::check_btf_header(&btf[..10])
            .unwrap_err()
            .starts_with("truncated: 10 bytes"));
        assert!(super::check_btf_header(b"\x7fELF....")
            .unwrap_err()
            .contains("0xeB9F"));
    }
}
