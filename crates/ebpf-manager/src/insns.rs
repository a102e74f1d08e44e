//! Instructions as the pipeline edits them: asm constants written into `ld_imm64` pairs, and
//! user patchers (the Go `InstructionPatchers`) run over each program before aya loads it.

use std::{fmt, sync::Arc};

/// One eBPF instruction (8 bytes, little-endian), as user patchers see and change it.
///
/// ```
/// use ebpf_manager::Instruction;
///
/// // `call -1`, the placeholder Go users write for a patcher to fill in.
/// let placeholder = Instruction::from_bytes([0x85, 0, 0, 0, 0xff, 0xff, 0xff, 0xff]);
/// assert!(placeholder.is_helper_call() && placeholder.imm == -1);
/// let fixed = Instruction::call_helper(5); // bpf_ktime_get_ns
/// assert_eq!(fixed.to_bytes(), [0x85, 0, 0, 0, 5, 0, 0, 0]);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Instruction {
    /// The opcode (class, size or source, operation).
    pub code: u8,
    /// The destination register (low nibble of the second byte).
    pub dst: u8,
    /// The source register (high nibble of the second byte); for `ld_imm64` and calls, the
    /// pseudo-source (map fd, BPF-to-BPF call, ...).
    pub src: u8,
    /// The signed offset (jumps, memory accesses).
    pub off: i16,
    /// The signed immediate (helper id of a call, constant, half of an `ld_imm64`).
    pub imm: i32,
}

/// `BPF_JMP | BPF_CALL`.
const CALL: u8 = 0x85;
/// `BPF_LD | BPF_IMM | BPF_DW`: the first half of a 16-byte `ld_imm64`.
pub(crate) const LD_IMM64: u8 = 0x18;

impl Instruction {
    /// Decodes 8 bytes.
    pub fn from_bytes(b: [u8; 8]) -> Self {
        Self {
            code: b[0],
            dst: b[1] & 0x0f,
            src: b[1] >> 4,
            off: i16::from_le_bytes([b[2], b[3]]),
            imm: i32::from_le_bytes([b[4], b[5], b[6], b[7]]),
        }
    }

    /// Encodes to 8 bytes.
    pub fn to_bytes(self) -> [u8; 8] {
        let [o0, o1] = self.off.to_le_bytes();
        let [i0, i1, i2, i3] = self.imm.to_le_bytes();
        [
            self.code,
            (self.src << 4) | (self.dst & 0x0f),
            o0,
            o1,
            i0,
            i1,
            i2,
            i3,
        ]
    }

    /// A call of the helper with this id (`BPF_FUNC_*`).
    pub fn call_helper(helper: i32) -> Self {
        Self {
            code: CALL,
            imm: helper,
            ..Default::default()
        }
    }

    /// Whether it is a call (of a helper, a BPF function or a kfunc).
    pub fn is_call(&self) -> bool {
        self.code == CALL
    }

    /// Whether it is a call of a helper (not of a BPF function, whose `imm` is a relative
    /// offset, -1 before relocation, nor of a kfunc).
    pub fn is_helper_call(&self) -> bool {
        self.code == CALL && self.src == 0
    }

    /// Whether it is the first half of a 16-byte `ld_imm64`.
    pub fn is_ld_imm64(&self) -> bool {
        self.code == LD_IMM64
    }
}

/// One program's instructions, handed to an [`InstructionPatcher`]. The patcher may change any
/// instruction but not their number (aya relocates by instruction offset).
///
/// Each relocated instruction has a reference, as in cilium/ebpf (`Instruction.Reference()`,
/// `Instructions.ReferenceOffsets()`): the symbol the ELF relocation names, a map, an asm
/// constant, a BPF function or a kfunc (a section's name for section-relative references
/// such as `.rodata`). A patcher finds a named constant's `ld_imm64`, or the instruction beside
/// a map load, by reference instead of by sentinel values.
#[derive(Debug)]
pub struct ProgramInstructions<'a> {
    /// The program's function name.
    pub function: &'a str,
    /// Its ELF section, as in the object (before any rename for aya).
    pub section: &'a str,
    /// Its instructions, constants already written.
    pub instructions: &'a mut [Instruction],
    /// (instruction index, symbol), sorted by index.
    pub(crate) references: &'a [(usize, String)],
}

impl ProgramInstructions<'_> {
    /// The symbol instruction `index` refers to, if it is relocated (the first half of an
    /// `ld_imm64`, a call of a BPF function or kfunc).
    ///
    /// ```
    /// use ebpf_manager::{InstructionPatcher, Instruction};
    ///
    /// // Telemetry-style: give the asm constant `sampling_rate` a value in every program.
    /// let patcher = InstructionPatcher::new(|prog| {
    ///     for at in prog.reference_offsets().remove("sampling_rate").unwrap_or_default() {
    ///         prog.instructions[at].imm = 100;
    ///         prog.instructions[at + 1].imm = 0;
    ///     }
    ///     Ok(())
    /// });
    /// # let _ = patcher;
    /// ```
    pub fn reference(&self, index: usize) -> Option<&str> {
        self.references
            .binary_search_by_key(&index, |(i, _)| *i)
            .ok()
            .map(|k| self.references[k].1.as_str())
    }

    /// Each referenced symbol and the indices of the instructions that refer to it, in order
    /// (Go's `ReferenceOffsets`).
    pub fn reference_offsets(&self) -> std::collections::BTreeMap<String, Vec<usize>> {
        let mut offsets = std::collections::BTreeMap::<String, Vec<usize>>::new();
        for (index, name) in self.references {
            offsets.entry(name.clone()).or_default().push(*index);
        }
        offsets
    }
}

/// A callback run over every program of the object after constants are set and before aya
/// loads it (the Go `Options.InstructionPatchers`), for each object the manager loads (the one
/// given to `init`, per-probe constant copies and clones). Returning `Err(reason)` fails that
/// load with [`Error::InstructionPatcher`](crate::Error::InstructionPatcher).
///
/// ```
/// use ebpf_manager::{Instruction, InstructionPatcher, Options};
///
/// // Replace every `call -1` placeholder with a call of bpf_ktime_get_ns (helper 5).
/// let patcher = InstructionPatcher::new(|prog| {
///     for ins in prog.instructions.iter_mut() {
///         if ins.is_helper_call() && ins.imm == -1 {
///             *ins = Instruction::call_helper(5);
///         }
///     }
///     Ok(())
/// });
/// let options = Options { instruction_patchers: vec![patcher], ..Default::default() };
/// # let _ = options;
/// ```
#[derive(Clone)]
pub struct InstructionPatcher(
    #[allow(clippy::type_complexity)]
    Arc<dyn Fn(&mut ProgramInstructions<'_>) -> Result<(), String> + Send + Sync>,
);

impl InstructionPatcher {
    /// Wraps a patching function.
    pub fn new(
        f: impl Fn(&mut ProgramInstructions<'_>) -> Result<(), String> + Send + Sync + 'static,
    ) -> Self {
        Self(Arc::new(f))
    }

    pub(crate) fn run(&self, prog: &mut ProgramInstructions<'_>) -> Result<(), String> {
        (self.0)(prog)
    }
}

impl fmt::Debug for InstructionPatcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("InstructionPatcher(..)")
    }
}

/// Decodes `bytes` (a multiple of 8 long) into instructions.
pub(crate) fn decode(bytes: &[u8]) -> Vec<Instruction> {
    bytes
        .chunks_exact(8)
        .map(|c| Instruction::from_bytes(c.try_into().expect("8 bytes")))
        .collect()
}

/// Writes the 64-bit `value` into the `ld_imm64` pair at `at` (its two immediates).
pub(crate) fn write_imm64(bytes: &mut [u8], at: usize, value: u64) {
    bytes[at + 4..at + 8].copy_from_slice(&(value as u32).to_le_bytes());
    bytes[at + 12..at + 16].copy_from_slice(&((value >> 32) as u32).to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instructions_round_trip() {
        let b = [0xb7, 0x21, 0xfe, 0xff, 0x2a, 0, 0, 0x80];
        let i = Instruction::from_bytes(b);
        assert_eq!(
            (i.code, i.dst, i.src, i.off, i.imm),
            (0xb7, 1, 2, -2, i32::MIN + 42)
        );
        assert_eq!(i.to_bytes(), b);
        assert_eq!(decode(&[b, b].concat()).len(), 2);
    }

    #[test]
    fn imm64_halves() {
        let mut pair = [0u8; 16];
        pair[0] = LD_IMM64;
        write_imm64(&mut pair, 0, 0x1122_3344_5566_7788);
        let ins = decode(&pair);
        assert!(ins[0].is_ld_imm64());
        assert_eq!(ins[0].imm as u32, 0x5566_7788);
        assert_eq!(ins[1].imm as u32, 0x1122_3344);
    }
}
