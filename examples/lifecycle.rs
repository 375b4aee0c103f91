//! A workspace's life on a fake clock: it collects Performance records for
//! twelve days (stored as sealed frames), exports them as CSV (cut at
//! 50 000 rows, resumed from the continuation), pages them through the
//! search API (5 000 rows a page), has its storage checked against
//! retention, is closed, and is purged 30 days later with its keys
//! shredded, after which a copy of its data kept anywhere can no longer be
//! opened.
//!
//! Run with `cargo run --release --example lifecycle`.

use std::error::Error;

use chrono::{DateTime, Duration, TimeZone, Utc};
use opsdata::{
    BatchId, BlobStore, CsvExport, DataType, DeleteReason, DeterministicEntropy, FrameEncoder,
    KeyError, KeyRing, MemoryBlobStore, ObjectKey, ObjectKind, Pager, PagingKey, Performance, Plan,
    Record, RetentionAction, RetentionPolicy, RotationPolicy, StoredObject, Tagged, TenantBatch,
    TenantId, Workspace, open, peek, seal, shred_keys,
};
use uuid::Uuid;

/// Records collected: enough for the export to be cut twice.
const RECORDS: u64 = 120_000;
/// Records per stored frame.
const PER_FRAME: usize = 5_000;

fn main() -> Result<(), Box<dyn Error>> {
    let t0 = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
    let day = |d: i64| t0 + Duration::days(d);
    // Deterministic randomness, so every run prints the same; a service
    // passes SystemEntropy.
    let mut entropy = DeterministicEntropy::from_u64(2026);
    let tenant: TenantId = "0f8fad5b-d9cb-469f-a165-70867728950e".parse()?;
    let retention = RetentionPolicy::default();
    let rotation = RotationPolicy::default();
    let mut workspace = Workspace::new(tenant, Plan::Premium);
    let mut ring = KeyRing::new(tenant, &rotation);
    let k1 = ring.generate(&mut entropy, t0)?;
    ring.promote(k1, t0)?;
    println!(
        "day  0  workspace {tenant} opened on the {:?} plan: raw data kept {} days",
        workspace.plan(),
        retention
            .retention_for(&workspace, ObjectKind::Raw(DataType::Performance))
            .num_days()
    );

    // Collect: one sample every 8.64 s for 12 days, stored as sealed frames.
    let step = Duration::days(12) / i32::try_from(RECORDS)?;
    let records: Vec<Tagged<Record>> = (0..RECORDS)
        .map(|i| Tagged::new(tenant, sample(i, t0 + step * i32::try_from(i).unwrap())))
        .collect();
    let mut store = MemoryBlobStore::new();
    let mut inventory_of = Vec::new();
    let mut encoder = FrameEncoder::new();
    let mut kept_copy = None;
    for (n, chunk) in records.chunks(PER_FRAME).enumerate() {
        let batch =
            TenantBatch::from_records(tenant, DataType::Performance, chunk.iter().cloned())?;
        let batch_id = BatchId::new(Uuid::from_u128(n as u128 + 1))?;
        let newest = time_of(chunk.last().expect("chunks are not empty"));
        let frame = encoder.encode_frame(&batch, batch_id, newest)?;
        let sealed = seal(&frame, &mut ring, &mut entropy, newest)?;
        let object = ObjectKey::for_batch(batch_id);
        store.put(tenant, object, &sealed)?;
        // What an inventory of the store would list about this object.
        inventory_of.push((
            object,
            time_of(&chunk[0]),
            newest,
            peek(sealed.as_bytes())?.kek_id,
        ));
        kept_copy.get_or_insert(sealed);
    }
    println!(
        "day 12  collected {RECORDS} Performance records in {} sealed objects under key {}",
        store.list(tenant)?.len(),
        k1.get()
    );

    // Export: at most 50 000 rows a part; the summary says where to go on.
    let mut export = CsvExport::new(tenant, DataType::Performance);
    let mut part = 1;
    loop {
        let mut csv = Vec::new();
        let summary = export.write(&records, &mut csv)?;
        let first = String::from_utf8_lossy(&csv)
            .lines()
            .nth(1)
            .unwrap_or("")
            .chars()
            .take(60)
            .collect::<String>();
        println!(
            "day 12  CSV export part {part}: rows {}..{} ({} bytes), first row {first}...{}",
            summary.first_row,
            summary.first_row + summary.rows as u64,
            csv.len(),
            match &summary.continuation {
                Some(c) => format!(" CUT at 50 000 rows, continue from row {}", c.next_row()),
                None => " complete".to_owned(),
            }
        );
        let Some(next) = summary.continuation else {
            break;
        };
        export = CsvExport::new(tenant, DataType::Performance).resume(&next)?;
        part += 1;
    }

    // Search API: 5 000 rows a page with a signed continuation token.
    let pager = Pager::new(PagingKey::generate(&mut entropy)?);
    let query = "Perf | where CounterName == '% Processor Time'";
    let first = pager.page(
        tenant,
        DataType::Performance,
        query,
        None,
        &records,
        day(12),
    )?;
    let token = first.next.clone().expect("more than one page");
    println!(
        "day 12  search page 1: {} rows, continuation token of {} characters",
        first.rows.len(),
        token.len()
    );
    let second = pager.page(
        tenant,
        DataType::Performance,
        query,
        Some(&token),
        &records,
        day(12),
    )?;
    println!(
        "day 12  search page 2: rows from {}, {} rows",
        second.offset,
        second.rows.len()
    );
    let other: TenantId = "7c9e6679-7425-40de-944b-e07fc1f90ae7".parse()?;
    let refused = pager
        .page(
            other,
            DataType::Performance,
            query,
            Some(&token),
            &records,
            day(12),
        )
        .unwrap_err();
    println!("day 12  the same token presented for another tenant: refused ({refused})");

    // Retention: an object goes once its newest record is past retention.
    let inventory = |store: &MemoryBlobStore| -> Vec<StoredObject> {
        let held = store.list(tenant).unwrap_or_default();
        inventory_of
            .iter()
            .filter(|(object, ..)| held.contains(object))
            .map(|&(object, oldest, newest, kek)| {
                StoredObject::new(
                    tenant,
                    object,
                    ObjectKind::Raw(DataType::Performance),
                    oldest,
                    newest,
                    kek,
                )
                .expect("newest is not before oldest")
            })
            .collect()
    };
    let plan = retention.plan(day(35), [&workspace], inventory(&store))?;
    let next_due = plan.next_due();
    let deleted = apply(&plan.into_actions(), &mut store, &mut ring, &mut workspace)?;
    println!(
        "day 35  retention: {deleted} objects deleted, {} kept; the first expires {}",
        store.list(tenant)?.len(),
        next_due.map_or("never".to_owned(), |t| t.to_string())
    );

    // Closing: data stays 30 days, then goes with the keys.
    let closed_at = day(40);
    workspace.close(&retention, closed_at)?;
    ring.close(&rotation, closed_at)?;
    println!(
        "day 40  workspace closed; purge due {}",
        workspace.purge_at().expect("closed")
    );
    let almost = closed_at + Duration::days(30) - Duration::seconds(1);
    let plan = retention.plan(almost, [&workspace], inventory(&store))?;
    let (expired, purge) = by_reason(plan.actions());
    println!(
        "day 69  one second before the purge: {purge} deletions for the purge, {expired} for age"
    );
    let purge = closed_at + Duration::days(30);
    let plan = retention.plan(purge, [&workspace], inventory(&store))?;
    let actions = plan.into_actions();
    // From here on no reopen, even one stamped by a lagging clock.
    workspace.begin_purge(purge)?;
    let (expired, purge) = by_reason(&actions);
    println!(
        "day 70  the purge is due: {expired} deletions for age, {purge} for the purge, then the keys"
    );
    let deleted = apply(&actions, &mut store, &mut ring, &mut workspace)?;
    println!(
        "day 70  purged: {deleted} objects deleted, {} left; workspace {:?}",
        store.list(tenant)?.len(),
        workspace.state()
    );

    // A copy of the data kept anywhere (a backup, a replica) is now noise.
    let copy = kept_copy.expect("at least one frame");
    match open(&copy, &ring) {
        Err(e @ KeyError::KeyDestroyed { .. }) => {
            println!("day 70  a sealed copy kept elsewhere no longer opens: {e}");
        }
        other => return Err(format!("expected KeyDestroyed, got {other:?}").into()),
    }
    Ok(())
}

/// Deletions in a plan: (for age, for a workspace purge).
fn by_reason(actions: &[RetentionAction]) -> (usize, usize) {
    let count = |want: DeleteReason| {
        actions
            .iter()
            .filter(
                |a| matches!(a, RetentionAction::DeleteObject { reason, .. } if *reason == want),
            )
            .count()
    };
    (
        count(DeleteReason::Expired),
        count(DeleteReason::WorkspacePurge),
    )
}

/// Carries out a retention plan's actions in order; returns the number of
/// objects deleted.
fn apply(
    actions: &[RetentionAction],
    store: &mut MemoryBlobStore,
    ring: &mut KeyRing,
    workspace: &mut Workspace,
) -> Result<usize, Box<dyn Error>> {
    let mut deleted = 0;
    for action in actions {
        match action {
            RetentionAction::DeleteObject { tenant, object, .. } => {
                store.delete(*tenant, *object)?;
                deleted += 1;
            }
            RetentionAction::ShredKeys { tenant } => {
                let at = workspace.purge_at().expect("a purge follows a close");
                let receipt = shred_keys(*tenant, ring, at)?;
                println!(
                    "        keys shredded: {} version(s) destroyed at {}",
                    receipt.key_ids.len(),
                    receipt.at
                );
            }
            RetentionAction::MarkPurged { at, .. } => workspace.mark_purged(*at)?,
            other => return Err(format!("an action this example does not know: {other:?}").into()),
        }
    }
    Ok(deleted)
}

fn sample(i: u64, at: DateTime<Utc>) -> Record {
    Record::Performance(Performance {
        object_name: "Processor".into(),
        counter_name: "% Processor Time".into(),
        perfmon_instance_name: format!("cpu{}", i % 4),
        performance_data_id: Uuid::from_u128(u128::from(i) + 1),
        performance_source_internal_id: 17,
        // A value between 0 and 100 with a fraction, deterministic.
        sample_value: (i * 37 % 10_000) as f64 / 100.0,
        time_sampled: at,
        time_added: at + Duration::seconds(3),
    })
}

fn time_of(record: &Tagged<Record>) -> DateTime<Utc> {
    match record.item() {
        Record::Performance(p) => p.time_sampled,
        _ => unreachable!("this example only collects Performance records"),
    }
}
