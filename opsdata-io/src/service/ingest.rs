//! One frame request: the frames split out of the body, each run through
//! its tenant's ingest under the tenant's lock (on the blocking pool), the
//! sealed frames stored concurrently, each frame's acknowledgement.

use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures_util::future::join_all;
use opsdata::{
    BatchId, Decoded, FIXED_HEADER_LEN, Frame, FrameDecoder, FrameError, FrameHeader, FrameLimits,
    IngestError, KeyError, Outcome, Principal, StoreOp,
};
use tracing::{debug, warn};

use super::IngestService;
use super::tenants::{TenantState, lock};
use crate::blobs::{AsyncBlobStore, PutOutcome};
use crate::wire::Ack;

/// What became of one frame before storing.
enum Fate {
    /// Answered without storing.
    Answer {
        outcome: Outcome,
        duplicate: bool,
        reason: &'static str,
    },
    /// Sealed: store it, then answer delivered (transient if the store
    /// fails).
    Store(StoreOp),
}

struct FrameFate {
    batch_id: BatchId,
    records: u64,
    content: u64,
    fate: Fate,
}

/// What the handler answers: the HTTP status class and the acks.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) kind: ReplyKind,
    pub(crate) acks: Vec<Ack>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReplyKind {
    /// 200.
    Ok,
    /// 400: bytes that are not frames.
    BadFrames,
    /// 429 with this `Retry-After`.
    Throttled(Duration),
    /// 503 with the service's `Retry-After`.
    Unavailable,
}

/// The frames of `body`, in order, and the bad bytes that stopped the
/// reading, if any (with the bad frame's batch id when its header passed
/// its CRC).
fn split(body: &Bytes, limits: FrameLimits) -> (Vec<Frame>, Option<(Option<BatchId>, FrameError)>) {
    let mut decoder = FrameDecoder::new(limits);
    decoder.push(body);
    let mut frames = Vec::new();
    let mut offset = 0usize;
    let bad = loop {
        match decoder.poll_frame() {
            Ok(Decoded::Frame(f)) => {
                offset += f.as_bytes().len();
                frames.push(f);
            }
            Ok(Decoded::NeedMore(_)) => match decoder.finish() {
                Ok(()) => break None,
                Err(e) => break Some(e),
            },
            Err(e) => break Some(e),
        }
    };
    let bad = bad.map(|e| {
        // The header's fields are only trusted once its CRC has passed,
        // which every later check implies.
        let trusted = !matches!(
            e,
            FrameError::HeaderCrc { .. }
                | FrameError::BadMagic { .. }
                | FrameError::UnsupportedVersion { .. }
                | FrameError::Truncated { .. }
        );
        let id = body
            .get(offset..offset + FIXED_HEADER_LEN)
            .filter(|_| trusted)
            .and_then(|h| <&[u8; FIXED_HEADER_LEN]>::try_from(h).ok())
            .and_then(|h| FrameHeader::parse(h).ok())
            .map(|h| h.batch_id);
        (id, e)
    });
    (frames, bad)
}

fn rejected_reason(e: Option<&IngestError>) -> &'static str {
    match e {
        Some(IngestError::Record { .. }) => "invalid_records",
        Some(IngestError::TenantMismatch { .. }) => "tenant_mismatch",
        Some(IngestError::Key(KeyError::AlreadySealed)) => "sealed",
        Some(IngestError::Key(KeyError::Shredded { .. })) => "purged",
        Some(IngestError::Frame(_)) => "bad_payload",
        _ => "other",
    }
}

impl<B: AsyncBlobStore> IngestService<B> {
    /// Runs one request's body for `principal` in a task of its own (so a
    /// client that goes away cannot cut it short between sealing and
    /// storing) and gives the reply.
    pub(crate) async fn ingest(&self, principal: Principal, body: Bytes) -> Reply {
        let svc = self.clone();
        let task = tokio::spawn(async move { svc.ingest_owned(principal, body).await });
        match task.await {
            Ok(reply) => reply,
            // A panic in the pipeline: nothing is known to be stored.
            Err(e) => {
                warn!(error = %e, "frame request task failed");
                Reply {
                    kind: ReplyKind::Unavailable,
                    acks: Vec::new(),
                }
            }
        }
    }

    async fn ingest_owned(&self, principal: Principal, body: Bytes) -> Reply {
        let now = self.now();
        let tenant = principal.tenant();
        let slot = self.inner.tenants.get(tenant);
        let unavailable = || Reply {
            kind: ReplyKind::Unavailable,
            acks: Vec::new(),
        };
        // The ring first (loaded, fresh, seals reserved: the key store's
        // awaits happen here, never under a lock the blocking work takes),
        // then the body on the blocking pool.
        let ring_err = self.ring_ready(&slot, tenant, true, false, now).await;
        let svc = self.clone();
        let p = principal.clone();
        let prepared = tokio::task::spawn_blocking(move || {
            let (frames, bad) = split(&body, svc.inner.config.limits());
            let mut fates = Vec::with_capacity(frames.len());
            let rest = svc.prepare(&p, frames, now, ring_err.as_deref(), true, &mut fates);
            (fates, bad, rest)
        })
        .await;
        let Ok((mut fates, bad, mut rest)) = prepared else {
            return unavailable();
        };
        // Frames left over when the reserved seals ran out mid-request:
        // reserve again and go on. A round that seals nothing lets the
        // next one answer every frame left (transient, or the seal's own
        // error), so this ends.
        let mut may_defer = true;
        while !rest.is_empty() {
            let before = rest.len();
            let ring_err = self.ring_ready(&slot, tenant, true, false, now).await;
            let svc = self.clone();
            let p = principal.clone();
            let defer = may_defer;
            let left_over: Vec<(BatchId, u64, u64)> = rest
                .iter()
                .map(|f| {
                    let h = f.header();
                    (
                        f.batch_id(),
                        u64::from(h.record_count),
                        u64::from(h.content_len),
                    )
                })
                .collect();
            let more = tokio::task::spawn_blocking(move || {
                let mut fates = Vec::with_capacity(rest.len());
                let rest = svc.prepare(&p, rest, now, ring_err.as_deref(), defer, &mut fates);
                (fates, rest)
            })
            .await;
            let Ok((more, left)) = more else {
                // A panic (rolled back by `prepare`): the frames prepared
                // before are stored below, the rest answered transient.
                fates.extend(
                    left_over
                        .into_iter()
                        .map(|(batch_id, records, content)| FrameFate {
                            batch_id,
                            records,
                            content,
                            fate: Fate::Answer {
                                outcome: Outcome::Transient,
                                duplicate: false,
                                reason: "ingest",
                            },
                        }),
                );
                break;
            };
            fates.extend(more);
            may_defer = left.len() < before;
            rest = left;
        }
        let m = &self.inner.metrics;
        // Every sealed frame is stored at once, concurrently, each put in a
        // task of its own: a store that panics fails its frame like one
        // that errs (the batch is handed back to ingest below, never left
        // marked in flight).
        let results = join_all(fates.iter().map(|f| {
            let op = match &f.fate {
                Fate::Store(op) => Some(op.clone()),
                Fate::Answer { .. } => None,
            };
            let svc = self.clone();
            async move {
                let op = op?;
                let put = tokio::spawn(async move {
                    let StoreOp::Put {
                        tenant,
                        object,
                        frame,
                    } = &op
                    else {
                        return Err("an unknown store operation".to_owned());
                    };
                    let started = Instant::now();
                    let r = svc.inner.store.put(*tenant, *object, frame).await;
                    svc.inner
                        .metrics
                        .store_seconds
                        .observe(started.elapsed().as_secs_f64());
                    r.map_err(|e| e.to_string())
                });
                Some(match put.await {
                    Ok(r) => r,
                    Err(e) => Err(format!("the blob store failed: {e}")),
                })
            }
        }))
        .await;
        if results.iter().any(Option::is_some) {
            let mut st = lock(&slot.state);
            for (f, r) in fates.iter_mut().zip(results) {
                let (Fate::Store(op), Some(r)) = (&f.fate, r) else {
                    continue;
                };
                st.in_flight.remove(&f.batch_id);
                f.fate = match r {
                    Ok(PutOutcome::Created) => {
                        m.frames_stored.inc();
                        m.records_stored.inc_by(f.records);
                        m.payload_bytes_stored.inc_by(f.content);
                        Fate::Answer {
                            outcome: Outcome::Delivered,
                            duplicate: false,
                            reason: "",
                        }
                    }
                    // Another node sharing the store, or an earlier try
                    // whose answer was lost, stored this batch: the stored
                    // object stays, and the batch is delivered, a
                    // duplicate (the object is durable: the store says so
                    // before answering).
                    Ok(PutOutcome::AlreadyExists) => {
                        debug!(%tenant, batch = %f.batch_id, "already stored");
                        Fate::Answer {
                            outcome: Outcome::Delivered,
                            duplicate: true,
                            reason: "",
                        }
                    }
                    Err(e) => {
                        // Forgotten by the de-duplication, so the retry is
                        // stored.
                        st.ingest.handle_store_failed(op);
                        m.store_failures.inc();
                        warn!(%tenant, batch = %f.batch_id, error = %e, "store failed");
                        Fate::Answer {
                            outcome: Outcome::Transient,
                            duplicate: false,
                            reason: "store",
                        }
                    }
                };
            }
        }
        self.reply(&fates, bad.as_ref())
    }

    /// Builds the reply and counts the outcomes.
    fn reply(&self, fates: &[FrameFate], bad: Option<&(Option<BatchId>, FrameError)>) -> Reply {
        let m = &self.inner.metrics;
        let mut acks = Vec::with_capacity(fates.len() + 1);
        let (mut throttled, mut transient, mut max_wait) = (0usize, 0usize, Duration::ZERO);
        for f in fates {
            let Fate::Answer {
                outcome,
                duplicate,
                reason,
            } = f.fate
            else {
                continue;
            };
            match outcome {
                Outcome::Delivered if duplicate => {
                    m.duplicates.inc();
                }
                Outcome::Delivered => {}
                Outcome::Throttled { retry_after } => {
                    m.throttled.inc();
                    throttled += 1;
                    max_wait = max_wait.max(retry_after.to_std().unwrap_or_default());
                }
                Outcome::Rejected => {
                    m.rejected.get_or_create(&[("reason", reason)]).inc();
                }
                _ => {
                    m.transient.get_or_create(&[("reason", reason)]).inc();
                    transient += 1;
                }
            }
            acks.push(Ack {
                batch_id: Some(f.batch_id),
                outcome,
            });
        }
        let n = fates.len();
        let kind = if let Some((batch_id, error)) = bad {
            m.rejected.get_or_create(&[("reason", "bad_bytes")]).inc();
            debug!(error = %error, "bytes that are not a frame");
            acks.push(Ack {
                batch_id: *batch_id,
                outcome: Outcome::Rejected,
            });
            ReplyKind::BadFrames
        } else if n == 0 {
            ReplyKind::BadFrames
        } else if throttled == n {
            ReplyKind::Throttled(max_wait)
        } else if transient == n {
            ReplyKind::Unavailable
        } else {
            ReplyKind::Ok
        };
        Reply { kind, acks }
    }

    /// On the blocking pool: runs each frame through the tenant's ingest
    /// under the tenant's lock, pushing one fate per frame, until the
    /// reserved seals run out (with `may_defer`): the frames from there on
    /// are handed back, unprepared, in order.
    fn prepare(
        &self,
        principal: &Principal,
        frames: Vec<Frame>,
        now: DateTime<Utc>,
        ring_err: Option<&str>,
        may_defer: bool,
        fates: &mut Vec<FrameFate>,
    ) -> Vec<Frame> {
        let inner = &*self.inner;
        let slot = inner.tenants.get(principal.tenant());
        let mut st = lock(&slot.state);
        let start = fates.len();
        // A panic below would be a bug in the core or here; it must not
        // leave a batch remembered by the de-duplication or the in-flight
        // set without its put, or the agent's retries of it would be
        // answered `in_flight` (or delivered) although it was never stored.
        // So the frames prepared so far are handed back to ingest before
        // the panic goes on (the tenant's lock is still held).
        let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.prepare_frames(principal, frames, now, ring_err, may_defer, &mut st, fates)
        }));
        match run {
            Ok(rest) => rest,
            Err(panic) => {
                for f in &fates[start..] {
                    if let Fate::Store(op) = &f.fate {
                        st.in_flight.remove(&f.batch_id);
                        st.ingest.handle_store_failed(op);
                    }
                }
                drop(st);
                std::panic::resume_unwind(panic);
            }
        }
    }

    /// Runs each frame through the tenant's ingest (the caller holds the
    /// tenant's lock), pushing one fate per frame; the frames left when the
    /// reserved seals ran out (with `may_defer`).
    #[allow(clippy::too_many_arguments)]
    fn prepare_frames(
        &self,
        principal: &Principal,
        frames: Vec<Frame>,
        now: DateTime<Utc>,
        ring_err: Option<&str>,
        may_defer: bool,
        st: &mut TenantState,
        fates: &mut Vec<FrameFate>,
    ) -> Vec<Frame> {
        let inner = &*self.inner;
        let m = &inner.metrics;
        let tenant = principal.tenant();
        let mut frames = frames.into_iter();
        while let Some(frame) = frames.next() {
            if may_defer
                && ring_err.is_none()
                && inner.vault.is_some()
                && st.ring.as_ref().is_some_and(|r| r.reserved_left() == 0)
            {
                let mut rest = vec![frame];
                rest.extend(frames);
                return rest;
            }
            let batch_id = frame.batch_id();
            let records = u64::from(frame.header().record_count);
            let content = u64::from(frame.header().content_len);
            m.frames_received.inc();
            m.records_received.inc_by(records);
            let answer = |outcome, reason| Fate::Answer {
                outcome,
                duplicate: false,
                reason,
            };
            let push = |fates: &mut Vec<FrameFate>, fate| {
                fates.push(FrameFate {
                    batch_id,
                    records,
                    content,
                    fate,
                });
            };
            if frame.tenant() != tenant {
                // Counted here; ingest counts it per principal too when it
                // sees it (below), but it needs a ring to be called.
                m.tenant_mismatches.inc();
                warn!(%tenant, found = %frame.tenant(), batch = %batch_id, "frame of another workspace");
            }
            if st.in_flight.contains(&batch_id) {
                push(fates, answer(Outcome::Transient, "in_flight"));
                continue;
            }
            if let Some(e) = ring_err {
                debug!(%tenant, error = %e, "key ring not ready");
                let fate = if frame.tenant() == tenant {
                    answer(Outcome::Transient, "key_ring")
                } else {
                    answer(Outcome::Rejected, "tenant_mismatch")
                };
                push(fates, fate);
                continue;
            }
            let st = &mut *st;
            let Some(ring) = st.ring.as_mut() else {
                push(fates, answer(Outcome::Transient, "key_ring"));
                continue;
            };
            let report = match st.ingest.handle_request(
                now,
                principal,
                ring,
                &mut *st.entropy,
                frame.as_bytes(),
            ) {
                Ok(r) => r,
                Err(e) => {
                    warn!(%tenant, error = %e, "ingest refused the request");
                    push(fates, answer(Outcome::Transient, "ingest"));
                    continue;
                }
            };
            // Drain every operation (the drain contract).
            let mut ops: Vec<StoreOp> = std::iter::from_fn(|| st.ingest.poll_store()).collect();
            let fate = match (report.answers.into_iter().next(), report.stopped) {
                (Some(a), _) if a.outcome == Outcome::Delivered && !ops.is_empty() => {
                    m.seals.inc();
                    st.in_flight.insert(batch_id);
                    // One whole frame was passed: at most one operation.
                    Fate::Store(ops.remove(0))
                }
                (Some(a), _) => {
                    let reason = match a.outcome {
                        Outcome::Rejected => rejected_reason(a.error.as_ref()),
                        Outcome::Transient => "seal",
                        _ => "",
                    };
                    if let Some(e) = &a.error {
                        debug!(%tenant, batch = %batch_id, reason, error_kind = reason, "frame not stored: {}", kind_of(e));
                    }
                    Fate::Answer {
                        outcome: a.outcome,
                        duplicate: a.duplicate,
                        reason,
                    }
                }
                (None, Some(e)) => answer(Outcome::Rejected, rejected_reason(Some(&e))),
                // One whole frame was passed, so ingest answers it or says
                // why not; if a later core did neither, let the agent retry.
                (None, None) => answer(Outcome::Transient, "ingest"),
            };
            for op in &ops {
                // Cannot happen (one frame, one put); never leave one
                // remembered but unstored.
                st.ingest.handle_store_failed(op);
            }
            push(fates, fate);
        }
        Vec::new()
    }
}

/// An error's kind, for logs: never its text, which for a record error
/// could quote record content.
fn kind_of(e: &IngestError) -> &'static str {
    match e {
        IngestError::Frame(_) => "frame",
        IngestError::TenantMismatch { .. } => "tenant mismatch",
        IngestError::Record { .. } => "invalid record",
        IngestError::Key(_) => "key",
        _ => "other",
    }
}
