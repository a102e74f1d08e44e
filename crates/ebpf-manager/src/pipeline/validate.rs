//! Checks of the bytes handed to aya, for what aya and aya-obj 0.14 do not check themselves and
//! would panic or abort on: symbols past the end of their section (aya-obj slices program
//! sections by them), instruction sections that are not whole instructions, uninitialized
//! data sections of absurd sizes (aya-obj allocates them: an allocation failure aborts the
//! process, which no `catch_unwind` can stop), and ring buffer sizes whose rounding overflows
//! in aya. Each gives a typed error before aya sees the object.

use object::{Object as _, ObjectSection as _, ObjectSymbol as _, SectionKind};

use crate::{Error, MapSpecEditor, Result};

/// The largest uninitialized data section (`.bss`) accepted. aya-obj allocates it in full; the
/// kernel refuses map values over `KMALLOC_MAX_SIZE` (4 MiB on x86-64) anyway.
const MAX_NOBITS: u64 = 64 << 20;

/// The largest ring buffer aya can round to a power of two of pages without overflowing a `u32`
/// (and more than the kernel accepts).
const MAX_RING_BYTES: u32 = 1 << 31;

const RINGBUF: u32 = 27;
const USER_RINGBUF: u32 = 31;

/// What the checks learn of the maps.
#[derive(Debug, Default)]
pub(crate) struct MapFacts {
    /// The maps the object pins by name (`pinning` = `LIBBPF_PIN_BY_NAME`), sorted.
    pub(crate) pinned_by_name: Vec<String>,
    /// User ring buffers whose size is not a power-of-two multiple of the page size, with the
    /// size libbpf creates them with (aya rounds only `BPF_MAP_TYPE_RINGBUF`).
    pub(crate) rounded_rings: Vec<(String, u32)>,
}

/// `size` rounded up to a power-of-two number of pages, as libbpf sizes ring buffers (the
/// kernel refuses any other size); 0 stays 0 for the kernel to refuse.
pub(crate) fn ring_size(size: u32, page: u32) -> u32 {
    if size == 0 || page == 0 {
        return size;
    }
    size.div_ceil(page)
        .checked_next_power_of_two()
        .and_then(|pages| pages.checked_mul(page))
        .unwrap_or(size)
}

/// The largest section alignment accepted.
const MAX_ALIGN: u64 = 4096;

fn invalid(reason: String) -> Error {
    Error::InvalidObject { reason }
}

/// Checks the user's `bytes` and the map sizes `specs` will set.
pub(crate) fn check(bytes: &[u8], specs: &[MapSpecEditor]) -> Result<MapFacts> {
    structure(bytes)?;
    check_maps(bytes, specs)
}

/// Checks sections and symbols. (The rewrite only moves what passed: excluded maps keep their
/// symbols in an empty section aya never reads.)
fn structure(bytes: &[u8]) -> Result<()> {
    let file = object::File::parse(bytes).map_err(|e| invalid(e.to_string()))?;
    super::validate_btf::check(&file)?;
    for section in file.sections() {
        let name = section.name().unwrap_or("?");
        // The rewrite writes sections at their alignment: an absurd one would pad the new file
        // to terabytes. ELF wants 0 or a power of two; BPF objects use at most 8.
        // aya-obj reads symbol values as offsets into their section and subtracts the section's
        // address from them: in an object (ELF relocatable) file, every address is 0.
        if section.address() != 0 {
            return Err(invalid(format!(
                "section `{name}` has the address {:#x}; in an object file sections have none",
                section.address()
            )));
        }
        let align = section.align();
        if align > MAX_ALIGN || (align > 1 && !align.is_power_of_two()) {
            return Err(invalid(format!(
                "section `{name}` asks for an alignment of {align} bytes (a power of two up to \
                 {MAX_ALIGN} is accepted)"
            )));
        }
        match section.kind() {
            SectionKind::UninitializedData | SectionKind::UninitializedTls => {
                if section.size() > MAX_NOBITS {
                    return Err(invalid(format!(
                        "section `{name}` asks for {} bytes of zeroed data; the limit is {} \
                         (the kernel refuses map values over a few MiB)",
                        section.size(),
                        MAX_NOBITS
                    )));
                }
            }
            _ => {
                section.data().map_err(|e| {
                    invalid(format!("section `{name}` is not inside the file: {e}"))
                })?;
            }
        }
        if section.kind() == SectionKind::Text && section.size() % 8 != 0 {
            return Err(invalid(format!(
                "section `{name}` holds {} bytes, not a whole number of 8-byte instructions",
                section.size()
            )));
        }
        // The rewrite moves relocations with their section (offsets plus the new base).
        for (offset, _) in section.relocations() {
            if offset >= section.size() {
                return Err(invalid(format!(
                    "section `{name}` has a relocation at {offset}, past its {} bytes",
                    section.size()
                )));
            }
        }
    }
    for symbol in file.symbols() {
        let Some(index) = symbol.section_index() else {
            continue;
        };
        let name = symbol.name().unwrap_or("?");
        let section = file.section_by_index(index).map_err(|e| {
            invalid(format!(
                "symbol `{name}` names a section that does not exist: {e}"
            ))
        })?;
        let end = symbol.address().checked_add(symbol.size());
        if end.is_none_or(|end| end > section.size()) {
            return Err(invalid(format!(
                "symbol `{name}` (at {}, {} bytes) runs past the end of section `{}` ({} bytes)",
                symbol.address(),
                symbol.size(),
                section.name().unwrap_or("?"),
                section.size()
            )));
        }
    }
    Ok(())
}

/// Ring buffer sizes, read by aya-obj (the checks above keep its parse from slicing out of
/// bounds); a panic inside it becomes an error, as a second line.
fn check_maps(bytes: &[u8], specs: &[MapSpecEditor]) -> Result<MapFacts> {
    AT_AYA_BOUNDARY.with(|at| at.set(true));
    let parsed = std::panic::catch_unwind(|| aya_obj::Object::parse(bytes));
    AT_AYA_BOUNDARY.with(|at| at.set(false));
    let obj = match parsed {
        Ok(Ok(obj)) => obj,
        // aya refuses it itself at load, with its own typed error.
        Ok(Err(_)) => return Ok(MapFacts::default()),
        Err(panic) => {
            return Err(invalid(format!(
                "aya-obj panicked on it: {}",
                message(&panic)
            )))
        }
    };
    let mut facts = MapFacts::default();
    // SAFETY: sysconf has no memory effects.
    let page = u32::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
    for (name, map) in &obj.maps {
        if map.pinning() == aya_obj::maps::PinningType::ByName {
            facts.pinned_by_name.push(name.clone());
        }
        if map.map_type() != RINGBUF && map.map_type() != USER_RINGBUF {
            continue;
        }
        let size = specs
            .iter()
            .find(|s| &s.name == name)
            .and_then(|s| s.max_entries)
            .unwrap_or(map.max_entries());
        if size > MAX_RING_BYTES {
            return Err(Error::InvalidMapDefinition {
                map: name.clone(),
                reason: format!(
                    "a ring buffer of {size} bytes: the largest is {MAX_RING_BYTES} (2 GiB)"
                ),
            });
        }
        let rounded = ring_size(size, page);
        if map.map_type() == USER_RINGBUF && rounded != size {
            facts.rounded_rings.push((name.clone(), rounded));
        }
    }
    facts.pinned_by_name.sort();
    Ok(facts)
}

thread_local! {
    /// Whether this thread is inside the `catch_unwind` around aya-obj's parse, where a panic
    /// becomes a typed error (the fuzz targets let those through and abort on any other).
    static AT_AYA_BOUNDARY: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether this thread is inside the `catch_unwind` around aya-obj's parse.
#[cfg_attr(not(feature = "fuzzing"), allow(dead_code))]
pub(crate) fn at_aya_boundary() -> bool {
    AT_AYA_BOUNDARY.with(std::cell::Cell::get)
}

/// The text of a panic's payload.
pub(crate) fn message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "no message".into())
}
