//! `ebpf-manager`, the command line of the ebpf-manager library:
//!
//! - `inspect OBJECT [--config FILE] [--load]`: the object's programs and maps; with a
//!   declaration, the program each declared probe runs and the hook and attach method it would
//!   get on this kernel, or the error init or start would give (nothing of the object loaded);
//!   with `--load`, also the verifier's verdict (nothing is attached, and everything is
//!   unloaded again).
//! - `run OBJECT --config FILE [--seconds N]`: init and start the declared manager, print its
//!   status, stream trace_pipe lines, reader records and log records (the programs' aya-log
//!   records, the library's messages, at info and above) until SIGINT or SIGTERM (or N
//!   seconds), stop, and print the final status. Exit code 1 when it cannot start.
//! - `cleanup [--dry-run]`: remove the tracefs events and bpffs directories dead managers of
//!   this library left, and only theirs.
//!
//! Human output by default, `--json` (one JSON document, or one per line for `run`) everywhere.
//! The declaration is TOML, or JSON when the file name ends in `.json`
//! ([`ebpf_manager::Declaration`]).

#![deny(missing_docs)]

mod cleanup;
mod inspect;
mod run;

use std::{io::Write, path::Path};

use clap::{Parser, Subcommand};
use ebpf_manager::Declaration;

/// The command line.
#[derive(Debug, Parser)]
#[command(
    name = "ebpf-manager",
    version,
    about = "Inspect eBPF objects, run declared managers, clean up after dead ones"
)]
struct Cli {
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The programs and maps of an object, and what a declaration would attach.
    Inspect {
        /// The eBPF object (ELF).
        object: std::path::PathBuf,
        /// A declaration (TOML, or JSON for *.json): each probe's program, and its hook and
        /// attach method on this kernel.
        #[arg(long)]
        config: Option<std::path::PathBuf>,
        /// Also load the declared probes' programs (the verifier runs) and report the
        /// manager's status; nothing is attached.
        #[arg(long, requires = "config")]
        load: bool,
    },
    /// Run a declared manager until SIGINT or SIGTERM.
    Run {
        /// The eBPF object (ELF).
        object: std::path::PathBuf,
        /// The declaration (TOML, or JSON for *.json).
        #[arg(long)]
        config: std::path::PathBuf,
        /// Stop after this many seconds.
        #[arg(long)]
        seconds: Option<u64>,
    },
    /// Remove what dead managers of this library left behind.
    Cleanup {
        /// Only list what would be removed.
        #[arg(long)]
        dry_run: bool,
    },
}

/// Runs the command line `args` (the program's name first), printing to `out` and `err`;
/// returns the exit code: 0 on success, 1 when the command failed, 2 for a bad command line.
pub fn run(args: impl IntoIterator<Item = String>, out: &mut dyn Write, err: &mut dyn Write) -> u8 {
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = if e.use_stderr() {
                write!(err, "{e}")
            } else {
                write!(out, "{e}")
            };
            return code;
        }
    };
    let result = match cli.command {
        Command::Inspect {
            object,
            config,
            load,
        } => inspect::inspect(&object, config.as_deref(), load, cli.json, out),
        Command::Run {
            object,
            config,
            seconds,
        } => run::run(&object, &config, seconds, cli.json, out),
        Command::Cleanup { dry_run } => cleanup::cleanup(dry_run, cli.json, out),
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            let _ = writeln!(err, "ebpf-manager: {e}");
            1
        }
    }
}

/// A failed command: what to print.
type Failed = String;

/// The bytes of a file, or why not.
fn read(path: &Path) -> Result<Vec<u8>, Failed> {
    std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))
}

/// The declaration in `path`: JSON when it ends in `.json`, TOML otherwise.
fn declaration(path: &Path) -> Result<Declaration, Failed> {
    let text = String::from_utf8(read(path)?)
        .map_err(|_| format!("{}: not UTF-8 text", path.display()))?;
    let parsed = if path.extension().is_some_and(|e| e == "json") {
        Declaration::from_json(&text)
    } else {
        Declaration::from_toml(&text)
    };
    parsed.map_err(|e| format!("{}: {}", path.display(), e.report()))
}

/// Writes `value` as pretty JSON.
fn json(out: &mut dyn Write, value: &impl serde::Serialize) -> Result<(), Failed> {
    serde_json::to_writer_pretty(&mut *out, value).map_err(|e| e.to_string())?;
    writeln!(out).map_err(|e| e.to_string())
}

/// Writes a line, or fails with why.
fn line(out: &mut dyn Write, text: std::fmt::Arguments<'_>) -> Result<(), Failed> {
    out.write_fmt(text)
        .and_then(|()| writeln!(out))
        .map_err(|e| e.to_string())
}
