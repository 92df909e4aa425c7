//! EDGE: the offline `flowlens-daemon decode FILE...` command.
//!
//! Reads captures in the order given through one [`Decoder`], so template and sampling
//! state carry from one file to the next (a template capture followed by a data
//! capture decodes like one capture), writes JSON lines or a summary, and optionally
//! loads and saves decoder state (`--state FILE`). A malformed packet is counted and
//! skipped; only an unreadable file is an error.
//!
//! `--explain` says, one line on stderr each, why a datagram was not decoded whole
//! (malformed, trailing bytes, records skipped by a rule, data waiting for or never
//! getting its template, IP fragments) and which templates were learned, with file,
//! frame number (1-based, as Wireshark numbers them), exporter, protocol, offset and the
//! bytes around it.

use std::collections::HashMap;
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use crate::capture::{self, Skip};
use crate::decode::state::StateSnapshot;
use crate::decode::{Datagram, Decoder, DecoderConfig, Note, explain};
use crate::output::{self, Summary};

/// Output format of the decode command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// One JSON object per flow record on stdout, the summary on stderr.
    Jsonl,
    /// Only the summary, on stdout.
    Summary,
}

/// Errors that stop the command (bad files), as opposed to bad packets (counted).
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Capture {
        path: PathBuf,
        source: capture::CaptureError,
    },
    #[error("state file {path}: {source}")]
    StateParse {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("state file {path}: {source}")]
    StateLoad {
        path: PathBuf,
        source: crate::decode::state::StateError,
    },
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("writing output: {0}")]
    Output(#[from] std::io::Error),
}

/// Where a datagram came from, for `--explain` lines.
#[derive(Debug, Clone)]
struct Origin {
    file: String,
    frame: usize,
    exporter: IpAddr,
    proto: &'static str,
}

impl Origin {
    fn line(&self, what: &str) -> String {
        format!(
            "{} frame {}: exporter {} {}: {what}",
            self.file, self.frame, self.exporter, self.proto
        )
    }
}

/// `--explain`: prints the decoder's notes, remembering where held data sets came
/// from so that what later happens to them (decoded, skipped records, never getting
/// their template) is reported against their own datagram. An origin is kept while
/// sets of its datagram are held, and dropped when the last one is resolved.
#[derive(Default)]
struct Explainer {
    /// Serial -> (origin, sets still held).
    held: HashMap<u64, (Origin, usize)>,
}

impl Explainer {
    fn report(
        &mut self,
        notes: Vec<Note>,
        current: Option<(&Origin, u64, &[u8])>,
        err: &mut dyn Write,
    ) -> std::io::Result<()> {
        for note in notes {
            let serial = note.serial();
            let line = match current {
                // About the datagram being decoded: its bytes can be shown.
                Some((origin, now, payload)) if serial.is_none_or(|s| s == now) => {
                    if matches!(note, Note::Held { .. }) {
                        self.held
                            .entry(now)
                            .or_insert_with(|| (origin.clone(), 0))
                            .1 += 1;
                    }
                    origin.line(&note.describe(Some(payload)))
                }
                // About an earlier datagram (a held set).
                _ => {
                    let Some(serial) = serial else {
                        continue;
                    };
                    let Some((origin, _)) = self.held.get(&serial) else {
                        continue;
                    };
                    origin.line(&note.describe(None))
                }
            };
            // A set held by this very datagram may also be resolved by it.
            if let Note::TemplateMissing { serial, .. } | Note::HeldResolved { serial, .. } = &note
                && let Some((_, held)) = self.held.get_mut(serial)
            {
                *held -= 1;
                if *held == 0 {
                    self.held.remove(serial);
                }
            }
            writeln!(err, "{line}")?;
        }
        Ok(())
    }
}

/// Runs the command. `out` gets the records (or the summary), `err` the summary line in
/// JSON-lines mode and, with `explain`, one line per thing not decoded as sent.
pub fn run(
    files: &[PathBuf],
    format: Format,
    state_file: Option<&Path>,
    config: DecoderConfig,
    explain: bool,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<Summary, CommandError> {
    let mut decoder = Decoder::new(config);
    decoder.set_explain(explain);
    let mut explainer = Explainer::default();
    if let Some(path) = state_file
        && path.exists()
    {
        let text = std::fs::read_to_string(path).map_err(|source| CommandError::Read {
            path: path.to_owned(),
            source,
        })?;
        let snapshot: StateSnapshot =
            serde_json::from_str(&text).map_err(|source| CommandError::StateParse {
                path: path.to_owned(),
                source,
            })?;
        decoder
            .load_state(snapshot)
            .map_err(|source| CommandError::StateLoad {
                path: path.to_owned(),
                source,
            })?;
    }
    let mut summary = Summary::default();
    let mut records = Vec::with_capacity(64);
    let mut line = String::new();
    let mut last_ts = 0;
    for path in files {
        let data = std::fs::read(path).map_err(|source| CommandError::Read {
            path: path.clone(),
            source,
        })?;
        let frames = capture::frames(&data).map_err(|source| CommandError::Capture {
            path: path.clone(),
            source,
        })?;
        let file = path.display().to_string();
        for (index, frame) in frames.iter().enumerate() {
            summary.packets_read += 1;
            last_ts = last_ts.max(frame.ts_ms);
            let udp = match capture::udp(frame) {
                Ok(u) => u,
                Err(skip) => {
                    let key = match skip {
                        Skip::NotUdp => "not_udp",
                        Skip::Fragment => "ip_fragment",
                        Skip::Truncated => "truncated",
                    };
                    *summary.frames_skipped.entry(key).or_default() += 1;
                    if explain && skip != Skip::NotUdp {
                        let why = match skip {
                            Skip::Fragment => "IP fragment: not reassembled, not decoded",
                            _ => "frame cut short by the capture: not decoded",
                        };
                        writeln!(err, "{file} frame {}: {why}", index + 1)?;
                    }
                    continue;
                }
            };
            summary.datagrams += 1;
            records.clear();
            let d = Datagram {
                exporter: udp.src,
                received_at_ms: frame.ts_ms,
                payload: udp.payload,
            };
            // A malformed datagram is counted by the decoder; go on with the next.
            let serial = decoder.serial();
            let result = decoder.decode(&d, &mut records);
            if explain {
                let origin = Origin {
                    file: file.clone(),
                    frame: index + 1,
                    exporter: udp.src,
                    proto: explain::protocol(udp.payload),
                };
                if let Err(e) = &result {
                    writeln!(err, "{}", origin.line(&explain::malformed(udp.payload, e)))?;
                }
                let notes = decoder.take_notes();
                explainer.report(notes, Some((&origin, serial, udp.payload)), err)?;
            }
            if format == Format::Jsonl {
                for rec in &records {
                    line.clear();
                    line.push_str(&output::json_line(rec));
                    line.push('\n');
                    out.write_all(line.as_bytes())?;
                }
            }
        }
    }
    decoder.expire_all();
    explainer.report(decoder.take_notes(), None, err)?;
    summary.absorb(&decoder.totals());
    if let Some(path) = state_file {
        let text = serde_json::to_string_pretty(&decoder.save_state()).unwrap_or_default();
        std::fs::write(path, text).map_err(|source| CommandError::Write {
            path: path.to_owned(),
            source,
        })?;
    }
    let line = summary.json_line();
    match format {
        Format::Jsonl => writeln!(err, "{line}")?,
        Format::Summary => writeln!(out, "{line}")?,
    }
    out.flush()?;
    let _ = last_ts;
    Ok(summary)
}
