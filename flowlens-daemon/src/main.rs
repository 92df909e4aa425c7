//! flowlens-daemon binary: parses the command line and runs the chosen command.

use std::io::{BufWriter, Write};
use std::process::ExitCode;

use clap::Parser;
use flowlens_daemon::cli::{Cli, Command};
use flowlens_daemon::decode::DecoderConfig;
use flowlens_daemon::decode_command;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Decode {
            format,
            state,
            files,
        } => {
            let stdout = std::io::stdout();
            let mut out = BufWriter::with_capacity(1 << 16, stdout.lock());
            let mut err = std::io::stderr();
            let result = decode_command::run(
                &files,
                format,
                state.as_deref(),
                DecoderConfig::default(),
                &mut out,
                &mut err,
            );
            let _ = out.flush();
            match result {
                Ok(_) => ExitCode::SUCCESS,
                Err(e) => {
                    let _ = writeln!(err, "flowlens-daemon decode: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
