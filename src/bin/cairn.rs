//! `cairn`: offline tools for cairn's state and snapshots.
//!
//! For now it answers where a key lives; the snapshot tools (inspect, dump, verify, diff, gc,
//! convert) come with the snapshot formats.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "cairn",
    version,
    about = "Tools for cairn's keyed state and snapshots"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Which key group a key belongs to, and which subtask owns it.
    ///
    /// The key is given as the bytes its key codec writes: UTF-8 text by default,
    /// or hex with --hex (e.g. a u64 key 42 is --hex 000000000000002a).
    ///
    /// Example: cairn keygroup hello --max-parallelism 128 --parallelism 3
    Keygroup {
        /// The serialized key.
        key: String,
        /// Read KEY as hex bytes.
        #[arg(long)]
        hex: bool,
        /// The operator's max parallelism (number of key groups).
        #[arg(long, default_value_t = 128)]
        max_parallelism: u32,
        /// The operator's parallelism.
        #[arg(long, default_value_t = 1)]
        parallelism: u32,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("cairn: {message}");
            ExitCode::from(2)
        }
    }
}

fn run(command: Command) -> Result<(), String> {
    match command {
        Command::Keygroup {
            key,
            hex,
            max_parallelism,
            parallelism,
        } => {
            let bytes = if hex {
                parse_hex(&key)?
            } else {
                key.into_bytes()
            };
            let max = cairn::MaxParallelism::new(max_parallelism).map_err(|e| e.to_string())?;
            let key_group = max.key_group_of(&bytes);
            let subtask = max
                .subtask_of(key_group, parallelism)
                .map_err(|e| e.to_string())?;
            let range = max
                .subtask_range(subtask, parallelism)
                .map_err(|e| e.to_string())?;
            println!(
                "key group {key_group} of {max}; subtask {subtask} of {parallelism} ({range})"
            );
            Ok(())
        }
    }
}

fn parse_hex(text: &str) -> Result<Vec<u8>, String> {
    if !text.len().is_multiple_of(2) {
        return Err(format!("'{text}' is not hex: odd number of digits"));
    }
    (0..text.len())
        .step_by(2)
        .map(|i| {
            text.get(i..i + 2)
                .and_then(|pair| u8::from_str_radix(pair, 16).ok())
                .ok_or_else(|| format!("'{text}' is not hex"))
        })
        .collect()
}
