//! frametool: write and read OPSF frames from the command line.
//!
//! ```text
//! frametool encode --tenant UUID --data-type NAME [--codec deflate|none]
//!                  [--level 0-9] [--batch-id UUID] [--created-ms N]
//!     JSON Lines records on stdin -> one frame on stdout
//! frametool decode [--expect-tenant UUID]
//!     concatenated frames on stdin -> one JSON object per frame per line
//! frametool seal --kek-id N --kek-hex HEX [--seed N]
//!     frames on stdin -> the same frames sealed under that key (the tenant
//!     is each frame's own); --seed makes the data keys and nonces
//!     reproducible (for test vectors only)
//! frametool open --kek-id N --kek-hex HEX
//!     sealed frames on stdin -> the same frames unsealed
//! frametool rewrap --from-kek-id N --from-kek-hex HEX --to-kek-id M --to-kek-hex HEX [--seed N]
//!     sealed frames on stdin -> the same frames with their data keys
//!     wrapped under key M; bodies unchanged
//! ```
//!
//! Keys are 64 hex digits (32 bytes).
//!
//! Exit status: 0 on success; 2 for invalid input (a bad record, an invalid
//! frame, input that ends inside a frame), with a one-line message on
//! stderr; 64 for a bad command line; 1 for an I/O error.
//!
//! Run it with `cargo run --example frametool -- decode < frames.opsf`;
//! `frametool --help` and `frametool <command> --help` list the options.

// An example may read the clock, draw a random batch id and use stdio.
#![allow(clippy::disallowed_methods)]

use std::io::{self, BufRead, Read, Write};
use std::process::ExitCode;

use chrono::{DateTime, Utc};
use clap::{Parser, Subcommand, ValueEnum};
use opsdata::{
    BatchId, Codec, DataType, Decoded, Frame, FrameDecoder, FrameEncoder, FrameHeader, FrameLimits,
    PayloadReader, Record, Tagged, TenantBatch, TenantId,
};
use serde::Serialize;

/// Write and read OPSF frames (docs/FRAME.md): encode records, decode
/// frames, seal, open and rewrap them. Keys are 64 hex digits (32 bytes).
///
/// Exit status: 0 on success; 2 for invalid input; 64 for a bad command
/// line; 1 for an I/O error.
#[derive(Debug, Parser)]
#[command(name = "frametool", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// JSON Lines records on stdin -> one frame on stdout.
    Encode {
        /// The workspace (tenant) id, a UUID.
        #[arg(long)]
        tenant: TenantId,
        /// The data type of every record (Alert, Configuration, Event,
        /// Metadata, Performance, State).
        #[arg(long)]
        data_type: DataType,
        /// The body's compression.
        #[arg(long, value_enum, default_value_t = CodecArg::Deflate)]
        codec: CodecArg,
        /// The DEFLATE level, 0-9 (default 1).
        #[arg(long)]
        level: Option<u32>,
        /// The batch id, a UUID (default: a random one).
        #[arg(long)]
        batch_id: Option<BatchId>,
        /// The creation time, in milliseconds since the Unix epoch
        /// (default: now).
        #[arg(long)]
        created_ms: Option<i64>,
    },
    /// Concatenated frames on stdin -> one JSON object per frame per line.
    Decode {
        /// Refuse a frame of any other tenant.
        #[arg(long)]
        expect_tenant: Option<TenantId>,
    },
    /// Frames on stdin -> the same frames sealed under the key (the
    /// tenant is each frame's own).
    Seal {
        /// The key's id.
        #[arg(long)]
        kek_id: u32,
        /// The key, 64 hex digits.
        #[arg(long)]
        kek_hex: String,
        /// Makes the data keys and nonces reproducible (for test vectors
        /// only).
        #[arg(long)]
        seed: Option<u64>,
    },
    /// Sealed frames on stdin -> the same frames unsealed.
    Open {
        /// The key's id.
        #[arg(long)]
        kek_id: u32,
        /// The key, 64 hex digits.
        #[arg(long)]
        kek_hex: String,
    },
    /// Sealed frames on stdin -> the same frames with their data keys
    /// wrapped under the `--to` key; bodies unchanged.
    Rewrap {
        /// The id of the key the frames are sealed under.
        #[arg(long)]
        from_kek_id: u32,
        /// That key, 64 hex digits.
        #[arg(long)]
        from_kek_hex: String,
        /// The id of the key to wrap under.
        #[arg(long)]
        to_kek_id: u32,
        /// That key, 64 hex digits.
        #[arg(long)]
        to_kek_hex: String,
        /// Makes the wrapping reproducible (for test vectors only).
        #[arg(long)]
        seed: Option<u64>,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum CodecArg {
    Deflate,
    None,
}

/// Why frametool stopped.
enum Failure {
    /// A bad command line (exit 64).
    Usage(String),
    /// Invalid input data (exit 2).
    Data(String),
    /// Reading or writing failed (exit 1).
    Io(io::Error),
}

impl From<io::Error> for Failure {
    fn from(e: io::Error) -> Self {
        Failure::Io(e)
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            // --help and --version are answers, not errors.
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                let _ = e.print();
                return ExitCode::SUCCESS;
            }
            let _ = e.print();
            return ExitCode::from(64);
        }
    };
    let result = match cli.command {
        Command::Encode {
            tenant,
            data_type,
            codec,
            level,
            batch_id,
            created_ms,
        } => encode(tenant, data_type, codec, level, batch_id, created_ms),
        Command::Decode { expect_tenant } => decode(expect_tenant),
        Command::Seal {
            kek_id,
            kek_hex,
            seed,
        } => keys::seal(kek_id, &kek_hex, seed),
        Command::Open { kek_id, kek_hex } => keys::open(kek_id, &kek_hex),
        Command::Rewrap {
            from_kek_id,
            from_kek_hex,
            to_kek_id,
            to_kek_hex,
            seed,
        } => keys::rewrap((from_kek_id, &from_kek_hex), (to_kek_id, &to_kek_hex), seed),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(msg)) => {
            eprintln!("frametool: {msg}\n(frametool --help lists the commands and options)");
            ExitCode::from(64)
        }
        Err(Failure::Data(msg)) => {
            eprintln!("frametool: {}", one_line(&msg));
            ExitCode::from(2)
        }
        // A closed pipe downstream is not an error worth a message.
        Err(Failure::Io(e)) if e.kind() == io::ErrorKind::BrokenPipe => ExitCode::from(1),
        Err(Failure::Io(e)) => {
            eprintln!("frametool: I/O error: {e}");
            ExitCode::from(1)
        }
    }
}

fn encode(
    tenant: TenantId,
    data_type: DataType,
    codec: CodecArg,
    level: Option<u32>,
    batch_id: Option<BatchId>,
    created_ms: Option<i64>,
) -> Result<(), Failure> {
    let usage = |e: &dyn std::fmt::Display| Failure::Usage(e.to_string());
    let codec = match codec {
        CodecArg::Deflate => Codec::Deflate,
        CodecArg::None => Codec::None,
    };
    let mut encoder = FrameEncoder::new().with_codec(codec);
    if let Some(level) = level {
        encoder = encoder.with_level(level).map_err(|e| usage(&e))?;
    }
    let batch_id = match batch_id {
        Some(id) => id,
        None => BatchId::new(uuid::Uuid::new_v4()).map_err(|e| usage(&e))?,
    };
    let created: DateTime<Utc> = match created_ms {
        Some(ms) => DateTime::from_timestamp_millis(ms)
            .ok_or_else(|| Failure::Usage(format!("--created-ms {ms} is out of range")))?,
        None => Utc::now(),
    };

    let mut batch = TenantBatch::new(tenant, data_type);
    let stdin = io::stdin();
    let mut line = Vec::new();
    let mut input = stdin.lock();
    let mut number = 0;
    loop {
        line.clear();
        if input.read_until(b'\n', &mut line)? == 0 {
            break;
        }
        number += 1;
        let text = line.trim_ascii();
        if text.is_empty() {
            continue;
        }
        let record = Record::from_json(data_type, text)
            .map_err(|e| Failure::Data(format!("line {number}: {e}")))?;
        batch
            .push(Tagged::new(tenant, record))
            .map_err(|e| Failure::Data(format!("line {number}: {}", e.error)))?;
    }
    let mut out = Vec::new();
    encoder
        .encode(&batch, batch_id, created, &mut out)
        .map_err(|e| Failure::Data(e.to_string()))?;
    let mut stdout = io::stdout().lock();
    stdout.write_all(&out)?;
    stdout.flush()?;
    Ok(())
}

/// A frame header as `docs/FRAME.md` prints it.
#[derive(Serialize)]
struct HeaderJson {
    magic: &'static str,
    version: u8,
    flags: u8,
    codec: &'static str,
    data_type: DataType,
    schema_version: u16,
    reserved: u16,
    record_count: u32,
    tenant_id: TenantId,
    batch_id: String,
    created_ms: i64,
    content_len: u32,
    body_len: u32,
}

impl From<&FrameHeader> for HeaderJson {
    fn from(h: &FrameHeader) -> Self {
        HeaderJson {
            magic: "894f5053",
            version: opsdata::FRAME_VERSION,
            flags: u8::from(h.sealed),
            codec: h.codec.name(),
            data_type: h.data_type,
            schema_version: opsdata::SCHEMA_VERSION,
            reserved: 0,
            record_count: h.record_count,
            tenant_id: h.tenant,
            batch_id: h.batch_id.to_string(),
            created_ms: h.created.timestamp_millis(),
            content_len: h.content_len,
            body_len: h.body_len,
        }
    }
}

#[derive(Serialize)]
struct FrameJson<'a> {
    header: HeaderJson,
    records: Option<&'a [Record]>,
}

fn print_frame(
    frame: &Frame,
    reader: &mut PayloadReader,
    out: &mut impl Write,
) -> Result<(), Failure> {
    let records = if frame.header().sealed {
        None
    } else {
        Some(
            reader
                .records(frame)
                .map_err(|e| Failure::Data(format!("frame {}: {e}", frame.batch_id())))?,
        )
    };
    let json = FrameJson {
        header: HeaderJson::from(frame.header()),
        records: records.as_deref(),
    };
    serde_json::to_writer(&mut *out, &json).map_err(io::Error::from)?;
    out.write_all(b"\n")?;
    Ok(())
}

fn decode(expect_tenant: Option<TenantId>) -> Result<(), Failure> {
    let limits = FrameLimits::default();
    let mut decoder = FrameDecoder::new(limits);
    if let Some(tenant) = expect_tenant {
        decoder = decoder.expect_tenant(tenant);
    }
    let mut reader = PayloadReader::new(limits);
    let mut stdin = io::stdin().lock();
    let mut stdout = io::BufWriter::new(io::stdout().lock());
    let mut chunk = vec![0u8; 64 * 1024];
    let mut offset: u64 = 0;
    loop {
        let n = match stdin.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        };
        decoder.push(&chunk[..n]);
        loop {
            match decoder.poll_frame() {
                Ok(Decoded::Frame(frame)) => {
                    let len = frame.len() as u64;
                    print_frame(&frame, &mut reader, &mut stdout)?;
                    offset += len;
                }
                Ok(Decoded::NeedMore(_)) => break,
                Err(e) => {
                    stdout.flush()?;
                    return Err(Failure::Data(format!(
                        "invalid frame at byte {offset}: {} ({e})",
                        e.check_name()
                    )));
                }
            }
        }
    }
    stdout.flush()?;
    decoder.finish().map_err(|e| {
        Failure::Data(format!(
            "invalid frame at byte {offset}: {} ({e})",
            e.check_name()
        ))
    })
}

/// The message on one line: control characters (a newline inside a record
/// key quoted by an error, say) are written as escapes.
fn one_line(msg: &str) -> String {
    msg.chars()
        .flat_map(|c| {
            let escaped: Vec<char> = if c.is_control() {
                c.escape_default().collect()
            } else {
                vec![c]
            };
            escaped
        })
        .collect()
}

/// seal, open and rewrap: frames in, frames out, under keys given on the
/// command line.
mod keys {
    use std::io::{self, Read, Write};

    use opsdata::{
        DeterministicEntropy, Entropy, Frame, FrameDecoder, FrameLimits, KeyId, KeyMaterial,
        KeyRing, RotationPolicy, SystemEntropy, TenantId,
    };

    use super::Failure;

    fn key_id(n: u32, name: &str) -> Result<KeyId, Failure> {
        KeyId::new(n).map_err(|e| Failure::Usage(format!("{name}: {e}")))
    }

    /// The key from its hex; the message never repeats the value given.
    fn key(text: &str, name: &str) -> Result<KeyMaterial, Failure> {
        let bad = || Failure::Usage(format!("{name} must be 64 hex digits"));
        // Hex digits only: from_str_radix alone would also take a `+` sign.
        if text.len() != 64 || !text.bytes().all(|c| c.is_ascii_hexdigit()) {
            return Err(bad());
        }
        let mut bytes = [0u8; 32];
        for (i, b) in bytes.iter_mut().enumerate() {
            *b = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
        }
        Ok(KeyMaterial::from_bytes(bytes))
    }

    fn entropy(seed: Option<u64>) -> Box<dyn Entropy> {
        match seed {
            Some(s) => Box::new(DeterministicEntropy::from_u64(s)),
            None => Box::new(SystemEntropy::new()),
        }
    }

    /// Reads every frame on stdin (the default limits allow a sealed
    /// body its 16-byte tag on top of the body limit).
    fn frames() -> Result<Vec<Frame>, Failure> {
        let mut input = Vec::new();
        io::stdin().lock().read_to_end(&mut input)?;
        let mut decoder = FrameDecoder::new(FrameLimits::default());
        decoder.push(&input);
        let mut out = Vec::new();
        let mut offset = 0;
        loop {
            match decoder.poll_frame() {
                Ok(opsdata::Decoded::Frame(f)) => {
                    offset += f.len();
                    out.push(f);
                }
                Ok(opsdata::Decoded::NeedMore(_)) => break,
                Err(e) => {
                    return Err(Failure::Data(format!(
                        "invalid frame at byte {offset}: {} ({e})",
                        e.check_name()
                    )));
                }
            }
        }
        decoder.finish().map_err(|e| {
            Failure::Data(format!(
                "invalid frame at byte {offset}: {} ({e})",
                e.check_name()
            ))
        })?;
        Ok(out)
    }

    /// A ring for `tenant` holding `keys` (ascending ids), the last of
    /// `primary` promoted.
    fn ring(
        tenant: TenantId,
        keys: Vec<(KeyId, KeyMaterial)>,
        primary: Option<KeyId>,
    ) -> Result<KeyRing, Failure> {
        let now = chrono::Utc::now();
        let mut ring = KeyRing::new(tenant, &RotationPolicy::default());
        for (id, material) in keys {
            ring.import(id, material, now)
                .map_err(|e| Failure::Usage(e.to_string()))?;
        }
        if let Some(id) = primary {
            ring.promote(id, now)
                .map_err(|e| Failure::Usage(e.to_string()))?;
        }
        Ok(ring)
    }

    fn write(frames: &[Frame]) -> Result<(), Failure> {
        let mut stdout = io::stdout().lock();
        for f in frames {
            stdout.write_all(f.as_bytes())?;
        }
        stdout.flush()?;
        Ok(())
    }

    fn failed(f: &Frame, e: opsdata::KeyError) -> Failure {
        Failure::Data(format!("frame {}: {e}", f.batch_id()))
    }

    pub(super) fn seal(kek_id: u32, hex: &str, seed: Option<u64>) -> Result<(), Failure> {
        let id = key_id(kek_id, "--kek-id")?;
        key(hex, "--kek-hex")?;
        let mut entropy = entropy(seed);
        let mut out = Vec::new();
        for f in frames()? {
            // The key is parsed again per frame: KeyMaterial is not Clone,
            // so that copies of it stay few and deliberate.
            let material = key(hex, "--kek-hex")?;
            let mut r = ring(f.tenant(), vec![(id, material)], Some(id))?;
            let now = chrono::Utc::now();
            out.push(opsdata::seal(&f, &mut r, &mut entropy, now).map_err(|e| failed(&f, e))?);
        }
        write(&out)
    }

    pub(super) fn open(kek_id: u32, hex: &str) -> Result<(), Failure> {
        let id = key_id(kek_id, "--kek-id")?;
        key(hex, "--kek-hex")?;
        let mut out = Vec::new();
        for f in frames()? {
            let material = key(hex, "--kek-hex")?;
            let r = ring(f.tenant(), vec![(id, material)], None)?;
            out.push(opsdata::open(&f, &r).map_err(|e| failed(&f, e))?);
        }
        write(&out)
    }

    pub(super) fn rewrap(
        (from_id, from_hex): (u32, &str),
        (to_id, to_hex): (u32, &str),
        seed: Option<u64>,
    ) -> Result<(), Failure> {
        let from = key_id(from_id, "--from-kek-id")?;
        let to = key_id(to_id, "--to-kek-id")?;
        if from == to {
            return Err(Failure::Usage(
                "--from-kek-id and --to-kek-id must differ".into(),
            ));
        }
        key(from_hex, "--from-kek-hex")?;
        key(to_hex, "--to-kek-hex")?;
        let mut entropy = entropy(seed);
        let mut out = Vec::new();
        for f in frames()? {
            let mut keys = vec![
                (from, key(from_hex, "--from-kek-hex")?),
                (to, key(to_hex, "--to-kek-hex")?),
            ];
            keys.sort_by_key(|(id, _)| *id);
            let mut r = ring(f.tenant(), keys, Some(to))?;
            let now = chrono::Utc::now();
            out.push(opsdata::rewrap(&f, &mut r, &mut entropy, now).map_err(|e| failed(&f, e))?);
        }
        write(&out)
    }
}
