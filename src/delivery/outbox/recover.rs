//! Rebuilding an [`Outbox`] from what a spool holds, damage included.

use std::collections::BTreeSet;

use bytes::Bytes;
use chrono::{DateTime, Utc};

use super::Outbox;
use crate::delivery::{DeliveryEvent, DeliveryPolicy, DropReason, StorageOp};
use crate::frame::{
    BatchId, Damage, Frame, FrameError, FrameHeader, FrameLimits, peek_header, scan_frames,
};

/// What [`Outbox::recover`] found in the spool.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct RecoveryReport {
    /// Frames held by the outbox once recovery is done.
    pub recovered: usize,
    /// Frames read back but dropped: already past their data type's
    /// `expire_after`, or beyond what the policy's limits hold (by the drop
    /// order, as for pushes). Each has a
    /// [`DeliveryEvent::Dropped`] event and a [`StorageOp::Remove`], so the
    /// spool lets go of it and the next restart does not report it again.
    pub dropped: usize,
    /// Frames skipped because they failed their checks, by position in the
    /// input, with the reason. The host should move them aside.
    pub skipped: Vec<(usize, FrameError)>,
    /// Frames skipped because their batch id was already recovered.
    pub duplicates: usize,
    /// Frames lost to damage whose header could still be read (its magic,
    /// header CRC and fields pass; the body does not): each has a
    /// [`DeliveryEvent::Dropped`] with [`DropReason::Corrupt`], so the
    /// [`LossLedger`](crate::LossLedger) notifies the loss, and a
    /// [`StorageOp::Remove`], so the spool lets go of it. A damaged frame
    /// whose batch id was recovered intact from another copy is no loss
    /// and is not counted here.
    pub corrupt: usize,
    /// From [`Outbox::recover_bytes`]: every stretch of bytes skipped, in
    /// order (offset, length, and the header when it could be read).
    pub damage: Vec<Damage>,
}

impl Outbox {
    /// Rebuilds an outbox from the frames a spool holds (in the order they
    /// were persisted), without asking to persist them again. Frames that
    /// fail their checks are skipped and reported, never a reason to refuse
    /// to start; a batch id seen twice is kept once. A damaged frame whose
    /// header still passes its checks (only the body fails) is a loss of a
    /// known batch: unless another copy of its batch was recovered intact,
    /// it gets a [`DeliveryEvent::Dropped`] with [`DropReason::Corrupt`]
    /// (records from its header, bytes its length) and a
    /// [`StorageOp::Remove`]. If the frames pass the
    /// policy's limits, the drop order applies as for pushes, and each frame
    /// dropped, refused or evicted, gets a [`StorageOp::Remove`] so that the
    /// spool ends up holding exactly what the outbox holds. Every tenant
    /// starts online. Drain the result as after any input: the recovered
    /// batches have no timer, so [`poll_transmit`](Outbox::poll_transmit)
    /// is what starts them.
    #[must_use]
    pub fn recover(
        policy: DeliveryPolicy,
        seed: u64,
        now: DateTime<Utc>,
        frames: impl IntoIterator<Item = Bytes>,
        limits: &FrameLimits,
    ) -> (Outbox, RecoveryReport) {
        let mut outbox = Outbox::new(policy, seed);
        let now = outbox.observe(now);
        let mut report = RecoveryReport::default();
        let mut seen = BTreeSet::new();
        let mut taken = 0;
        let mut corrupt = Vec::new();
        for (index, bytes) in frames.into_iter().enumerate() {
            let len = bytes.len() as u64;
            match Frame::decode(bytes.clone(), limits) {
                Err(e) => {
                    if let Ok(header) = peek_header(&bytes) {
                        corrupt.push((header, len));
                    }
                    report.skipped.push((index, e));
                }
                Ok(frame) if !seen.insert(frame.batch_id()) => {
                    report.duplicates += 1;
                }
                Ok(frame) => {
                    outbox.insert(now, frame, false);
                    taken += 1;
                }
            }
        }
        outbox.drop_corrupt(&seen, corrupt, &mut report);
        report.recovered = outbox.batches.len();
        report.dropped = taken - report.recovered;
        (outbox, report)
    }

    /// [`recover`](Outbox::recover) from one blob of concatenated frames
    /// with damage in it (a spool segment read whole, say): every frame
    /// that passes all its checks is recovered, in order, the damage
    /// between them skipped by [`scan_frames`] (`docs/FRAME.md`,
    /// "Resynchronising"). Each stretch skipped is listed in
    /// [`RecoveryReport::damage`]; one that starts with a readable header
    /// is a frame lost to damage, reported as in
    /// [`recover`](Outbox::recover) ([`DropReason::Corrupt`], bytes the
    /// stretch's length). [`RecoveryReport::skipped`] stays empty: damage
    /// has offsets, not entry positions. Work is linear in the blob's
    /// length (see [`scan_frames`]).
    #[must_use]
    pub fn recover_bytes(
        policy: DeliveryPolicy,
        seed: u64,
        now: DateTime<Utc>,
        bytes: Bytes,
        limits: &FrameLimits,
    ) -> (Outbox, RecoveryReport) {
        let scan = scan_frames(bytes, limits);
        // A batch with an intact copy is no loss, even if that copy is then
        // dropped (expired, over a limit): that drop is its report.
        let intact: BTreeSet<BatchId> = scan.frames.iter().map(|(_, f)| f.batch_id()).collect();
        let frames = scan.frames.into_iter().map(|(_, f)| f.as_bytes().clone());
        let (mut outbox, mut report) = Outbox::recover(policy, seed, now, frames, limits);
        let corrupt = scan
            .damage
            .iter()
            .filter_map(|d| d.header.map(|h| (h, d.len as u64)))
            .collect();
        outbox.drop_corrupt(&intact, corrupt, &mut report);
        report.damage = scan.damage;
        (outbox, report)
    }

    /// Reports frames lost to damage, each once, unless their batch was
    /// recovered intact (`intact`).
    fn drop_corrupt(
        &mut self,
        intact: &BTreeSet<BatchId>,
        corrupt: Vec<(FrameHeader, u64)>,
        report: &mut RecoveryReport,
    ) {
        let mut reported = BTreeSet::new();
        for (h, bytes) in corrupt {
            if intact.contains(&h.batch_id) || !reported.insert(h.batch_id) {
                continue;
            }
            report.corrupt += 1;
            self.events.push_back(DeliveryEvent::Dropped {
                tenant: h.tenant,
                data_type: h.data_type,
                batch_id: h.batch_id,
                records: h.record_count,
                bytes,
                reason: DropReason::Corrupt,
            });
            self.storage.push_back(StorageOp::Remove {
                batch_id: h.batch_id,
            });
        }
    }
}
