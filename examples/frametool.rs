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
//! Run it with `cargo run --example frametool -- decode < frames.opsf`.

// An example may read the clock, draw a random batch id and use stdio.
#![allow(clippy::disallowed_methods)]

use std::io::{self, BufRead, Read, Write};
use std::process::ExitCode;

use chrono::{DateTime, Utc};
use opsdata::{
    BatchId, Codec, DataType, Decoded, Frame, FrameDecoder, FrameEncoder, FrameHeader, FrameLimits,
    PayloadReader, Record, Tagged, TenantBatch, TenantId,
};
use serde::Serialize;

const USAGE: &str = "usage: frametool encode --tenant UUID --data-type NAME [--codec deflate|none] \
[--level 0-9] [--batch-id UUID] [--created-ms N]\n       frametool decode [--expect-tenant UUID]\n       \
frametool seal --kek-id N --kek-hex HEX [--seed N]\n       frametool open --kek-id N --kek-hex HEX\n       \
frametool rewrap --from-kek-id N --from-kek-hex HEX --to-kek-id M --to-kek-hex HEX [--seed N]";

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
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("encode") => encode(&args[1..]),
        Some("decode") => decode(&args[1..]),
        Some("seal") => keys::seal(&args[1..]),
        Some("open") => keys::open(&args[1..]),
        Some("rewrap") => keys::rewrap(&args[1..]),
        Some("-h" | "--help") => {
            println!("{USAGE}");
            Ok(())
        }
        _ => Err(Failure::Usage(
            "expected a command: encode, decode, seal, open or rewrap".into(),
        )),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(msg)) => {
            eprintln!("frametool: {msg}\n{USAGE}");
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

/// `--name value` options, each at most once.
fn options<'a>(args: &'a [String], known: &[&str]) -> Result<Vec<(&'a str, &'a str)>, Failure> {
    let mut out: Vec<(&str, &str)> = Vec::new();
    let mut it = args.iter();
    while let Some(name) = it.next() {
        if !known.contains(&name.as_str()) {
            return Err(Failure::Usage(format!("unknown option {name:?}")));
        }
        let value = it
            .next()
            .ok_or_else(|| Failure::Usage(format!("{name} needs a value")))?;
        if out.iter().any(|(n, _)| n == name) {
            return Err(Failure::Usage(format!("{name} given twice")));
        }
        out.push((name, value));
    }
    Ok(out)
}

fn get<'a>(opts: &[(&str, &'a str)], name: &str) -> Option<&'a str> {
    opts.iter().find(|(n, _)| *n == name).map(|(_, v)| *v)
}

fn encode(args: &[String]) -> Result<(), Failure> {
    let opts = options(
        args,
        &[
            "--tenant",
            "--data-type",
            "--codec",
            "--level",
            "--batch-id",
            "--created-ms",
        ],
    )?;
    let usage = |e: &dyn std::fmt::Display| Failure::Usage(e.to_string());
    let tenant: TenantId = get(&opts, "--tenant")
        .ok_or_else(|| Failure::Usage("--tenant is required".into()))?
        .parse()
        .map_err(|e| usage(&e))?;
    let data_type: DataType = get(&opts, "--data-type")
        .ok_or_else(|| Failure::Usage("--data-type is required".into()))?
        .parse()
        .map_err(|e| usage(&e))?;
    let codec = match get(&opts, "--codec").unwrap_or("deflate") {
        "deflate" => Codec::Deflate,
        "none" => Codec::None,
        other => return Err(Failure::Usage(format!("unknown codec {other:?}"))),
    };
    let mut encoder = FrameEncoder::new().with_codec(codec);
    if let Some(level) = get(&opts, "--level") {
        let level = level.parse().map_err(|e| usage(&e))?;
        encoder = encoder.with_level(level).map_err(|e| usage(&e))?;
    }
    let batch_id = match get(&opts, "--batch-id") {
        Some(s) => s.parse::<BatchId>().map_err(|e| usage(&e))?,
        None => BatchId::new(uuid::Uuid::new_v4()).map_err(|e| usage(&e))?,
    };
    let created: DateTime<Utc> = match get(&opts, "--created-ms") {
        Some(s) => {
            let ms: i64 = s.parse().map_err(|e| usage(&e))?;
            DateTime::from_timestamp_millis(ms)
                .ok_or_else(|| Failure::Usage(format!("--created-ms {ms} is out of range")))?
        }
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

fn decode(args: &[String]) -> Result<(), Failure> {
    let opts = options(args, &["--expect-tenant"])?;
    let limits = FrameLimits::default();
    let mut decoder = FrameDecoder::new(limits);
    if let Some(t) = get(&opts, "--expect-tenant") {
        let tenant: TenantId = t
            .parse()
            .map_err(|e: opsdata::TenantError| Failure::Usage(e.to_string()))?;
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

    use super::{Failure, get, options};

    fn key_id(opts: &[(&str, &str)], name: &str) -> Result<KeyId, Failure> {
        let text = get(opts, name).ok_or_else(|| Failure::Usage(format!("{name} is required")))?;
        let n: u32 = text
            .parse()
            .map_err(|e| Failure::Usage(format!("{name}: {e}")))?;
        KeyId::new(n).map_err(|e| Failure::Usage(format!("{name}: {e}")))
    }

    fn key(opts: &[(&str, &str)], name: &str) -> Result<KeyMaterial, Failure> {
        let text = get(opts, name).ok_or_else(|| Failure::Usage(format!("{name} is required")))?;
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

    fn entropy(opts: &[(&str, &str)]) -> Result<Box<dyn Entropy>, Failure> {
        Ok(match get(opts, "--seed") {
            Some(s) => Box::new(DeterministicEntropy::from_u64(
                s.parse()
                    .map_err(|e| Failure::Usage(format!("--seed: {e}")))?,
            )),
            None => Box::new(SystemEntropy::new()),
        })
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

    pub(super) fn seal(args: &[String]) -> Result<(), Failure> {
        let opts = options(args, &["--kek-id", "--kek-hex", "--seed"])?;
        let id = key_id(&opts, "--kek-id")?;
        let hex = get(&opts, "--kek-hex");
        key(&opts, "--kek-hex")?;
        let mut entropy = entropy(&opts)?;
        let mut out = Vec::new();
        for f in frames()? {
            // The key is parsed again per frame: KeyMaterial is not Clone,
            // so that copies of it stay few and deliberate.
            let material = key(&[("--kek-hex", hex.unwrap_or_default())], "--kek-hex")?;
            let mut r = ring(f.tenant(), vec![(id, material)], Some(id))?;
            let now = chrono::Utc::now();
            out.push(opsdata::seal(&f, &mut r, &mut entropy, now).map_err(|e| failed(&f, e))?);
        }
        write(&out)
    }

    pub(super) fn open(args: &[String]) -> Result<(), Failure> {
        let opts = options(args, &["--kek-id", "--kek-hex"])?;
        let id = key_id(&opts, "--kek-id")?;
        let hex = get(&opts, "--kek-hex");
        key(&opts, "--kek-hex")?;
        let mut out = Vec::new();
        for f in frames()? {
            let material = key(&[("--kek-hex", hex.unwrap_or_default())], "--kek-hex")?;
            let r = ring(f.tenant(), vec![(id, material)], None)?;
            out.push(opsdata::open(&f, &r).map_err(|e| failed(&f, e))?);
        }
        write(&out)
    }

    pub(super) fn rewrap(args: &[String]) -> Result<(), Failure> {
        let opts = options(
            args,
            &[
                "--from-kek-id",
                "--from-kek-hex",
                "--to-kek-id",
                "--to-kek-hex",
                "--seed",
            ],
        )?;
        let from = key_id(&opts, "--from-kek-id")?;
        let to = key_id(&opts, "--to-kek-id")?;
        if from == to {
            return Err(Failure::Usage(
                "--from-kek-id and --to-kek-id must differ".into(),
            ));
        }
        key(&opts, "--from-kek-hex")?;
        key(&opts, "--to-kek-hex")?;
        let mut entropy = entropy(&opts)?;
        let mut out = Vec::new();
        for f in frames()? {
            let mut keys = vec![
                (from, key(&opts, "--from-kek-hex")?),
                (to, key(&opts, "--to-kek-hex")?),
            ];
            keys.sort_by_key(|(id, _)| *id);
            let mut r = ring(f.tenant(), keys, Some(to))?;
            let now = chrono::Utc::now();
            out.push(opsdata::rewrap(&f, &mut r, &mut entropy, now).map_err(|e| failed(&f, e))?);
        }
        write(&out)
    }
}
