//! Promises that survive a restart (docs/STATE.md): the loss ledger, a
//! workspace and the pager's keys, saved and restored by the host.

use chrono::{DateTime, Duration, TimeZone, Utc};
use opsdata::{
    DataType, DeterministicEntropy, ExportError, IncidentError, LedgerPolicy, Loss, LossLedger,
    LossReason, LossWindow, Pager, PagingKey, Performance, Plan, Record, RetentionError,
    RetentionPolicy, SavedPagingKeys, Tagged, TenantId, Workspace, WorkspaceState,
};
use uuid::Uuid;

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0).unwrap()
}

fn a() -> TenantId {
    "0f8fad5b-d9cb-469f-a165-70867728950e".parse().unwrap()
}

fn b() -> TenantId {
    "7c9e6679-7425-40de-944b-e07fc1f90ae7".parse().unwrap()
}

fn loss(tenant: TenantId, at: DateTime<Utc>, records: u64) -> Loss {
    Loss {
        tenant,
        data_type: DataType::Event,
        records,
        bytes: 100 * records,
        reason: LossReason::Storage,
        window: LossWindow::new(at - Duration::minutes(5), at).unwrap(),
    }
}

// ------------------------------------------------------------ LossLedger

#[test]
fn a_loss_before_a_restart_is_notified_within_24_hours_of_its_first_loss() {
    let mut ledger = LossLedger::new(LedgerPolicy::default());
    // Losses every 30 minutes for 10 hours: the grouping delay keeps
    // postponing the notice, the 24-hour deadline does not move.
    let mut now = t0();
    let id = ledger.report_loss(now, loss(a(), now, 1));
    for _ in 0..20 {
        now += Duration::minutes(30);
        assert!(ledger.poll_notices(now).is_none());
        ledger.report_loss(now, loss(a(), now, 1));
    }
    // Another tenant's incident, opened later.
    let other = ledger.report_loss(now, loss(b(), now, 7));
    let saved = ledger.save();
    drop(ledger);

    // The restart: a new process, another grouping delay even.
    let policy = LedgerPolicy::default()
        .with_grouping_delay(Duration::hours(20))
        .unwrap();
    let mut ledger = LossLedger::restore(policy, &saved).unwrap();
    assert_eq!(ledger.save(), saved, "a restored ledger saves the same");
    assert_eq!(ledger.open_incident(a()), Some(id));
    assert_eq!(ledger.poll_timeout(), Some(t0() + Duration::hours(24)));
    // Polling every hour after the restart: the notice is on time.
    let mut notices = Vec::new();
    let mut t = now;
    while t <= t0() + Duration::hours(36) {
        while let Some(n) = ledger.poll_notices(t) {
            notices.push(n);
        }
        t += Duration::hours(1);
    }
    let n = notices.iter().find(|n| n.incident == id).expect("notified");
    assert!(!n.overdue);
    assert!(n.emitted_at <= t0() + Duration::hours(24));
    assert_eq!(n.deadline, t0() + Duration::hours(24));
    assert_eq!(n.records(), 21);
    assert_eq!(n.window.start(), t0());
    // The other incident (first loss at 10 h) is due by the new grouping
    // delay, 20 h after its loss, still before its own deadline.
    let o = notices
        .iter()
        .find(|n| n.incident == other)
        .expect("notified");
    assert_eq!((o.records(), o.overdue), (7, false));
    assert_eq!(o.emitted_at, now + Duration::hours(20));
    // Ids go on from where they were.
    let next = ledger.report_loss(t, loss(a(), t, 1));
    assert!(next.get() > other.get());
}

#[test]
fn a_restored_ledger_keeps_the_lifecycle_and_the_closed_order() {
    let mut ledger = LossLedger::new(LedgerPolicy::default());
    let id = ledger.report_loss(t0(), loss(a(), t0(), 3));
    let t1 = t0() + Duration::hours(2);
    assert!(ledger.poll_notices(t1).is_some());
    ledger.assess(t1, id).unwrap();
    ledger.diagnose(t1, id).unwrap();
    ledger.stabilize(t1, id).unwrap();
    ledger.close(t1, id, "a disk failed").unwrap();
    let open = ledger.report_loss(t1, loss(a(), t1, 1));
    let mut restored = LossLedger::restore(LedgerPolicy::default(), &ledger.save()).unwrap();
    assert_eq!(restored.incident(id), ledger.incident(id));
    assert_eq!(restored.incident(open), ledger.incident(open));
    let closed = restored.take_closed().expect("the closed one");
    assert_eq!(closed.post_mortem(), Some("a disk failed"));
    // The latest time seen came back too: an earlier `now` is taken as it.
    let n = restored.poll_notices(t0()).map(|n| n.emitted_at);
    assert_eq!(n, None);
}

#[test]
fn a_saved_ledger_that_breaks_a_rule_is_refused() {
    let mut ledger = LossLedger::new(LedgerPolicy::default());
    ledger.report_loss(t0(), loss(a(), t0(), 3));
    let saved = ledger.save();
    let deadline = format!("{:?}", t0() + Duration::hours(24)).replace("UTC", "Z");
    let cases = [
        saved.replace("\"version\":1", "\"version\":2"),
        saved.replace("opsdata.loss_ledger", "opsdata.workspace"),
        // A deadline moved out past 24 hours.
        saved.replace("2026-11-24T12:00:00Z", "2026-11-24T12:00:01Z"),
        saved.replace("\"next_id\":2", "\"next_id\":1"),
        saved.replace("\"storage\"", "\"flood\""),
        saved.replace("\"closed\":[]", "\"closed\":[1]"),
        "{}".to_owned(),
        "not json".to_owned(),
    ];
    assert!(saved.contains("2026-11-24T12:00:00Z"), "{saved} {deadline}");
    for case in cases {
        assert_ne!(case, saved);
        assert!(
            matches!(
                LossLedger::restore(LedgerPolicy::default(), &case),
                Err(IncidentError::State { .. })
            ),
            "{case}"
        );
    }
}

// ------------------------------------------------------------- Workspace

#[test]
fn a_workspace_closed_before_a_restart_is_purged_on_time_after_it() {
    let policy = RetentionPolicy::default();
    let mut w = Workspace::new(a(), Plan::Standard)
        .with_type_retention(DataType::Performance, Some(Duration::days(10)))
        .unwrap()
        .with_retention(Some(Duration::days(60)))
        .unwrap();
    w.close(&policy, t0()).unwrap();
    let saved = w.save();
    let mut back = Workspace::restore(&saved).unwrap();
    assert_eq!(back, w);
    assert_eq!(back.purge_at(), Some(t0() + Duration::days(30)));
    // The purge is due exactly on time, not before.
    let due = t0() + Duration::days(30);
    assert!(matches!(
        back.begin_purge(due - Duration::seconds(1)),
        Err(RetentionError::PurgeNotDue { .. })
    ));
    back.begin_purge(due).unwrap();
    // Saved again after the purge began, and restored: a lagging clock
    // cannot reopen it (the latest time seen came back).
    let mut again = Workspace::restore(&back.save()).unwrap();
    assert_eq!(again.latest_seen(), Some(due));
    assert!(matches!(
        again.reopen(due - Duration::days(2)),
        Err(RetentionError::PurgeDue { .. })
    ));
    again.mark_purged(due).unwrap();
    assert_eq!(
        Workspace::restore(&again.save()).unwrap().state(),
        WorkspaceState::Purged { at: due }
    );
}

#[test]
fn a_saved_workspace_that_breaks_a_rule_is_refused() {
    let mut w = Workspace::new(a(), Plan::Premium);
    w.close(&RetentionPolicy::default(), t0()).unwrap();
    let saved = w.save();
    assert!(Workspace::restore(&saved.replace("premium", "platinum")).is_err());
    assert!(Workspace::restore(&saved.replace("\"version\":1", "\"version\":9")).is_err());
    // A purge time before the close.
    let bad = saved.replace("2026-12-23T12:00:00Z", "2026-11-22T12:00:00Z");
    assert_ne!(bad, saved);
    assert!(Workspace::restore(&bad).is_err());
}

// ----------------------------------------------------------- Paging keys

fn rows() -> Vec<Tagged<Record>> {
    (0..10u128)
        .map(|i| {
            Tagged::new(
                a(),
                Record::from(Performance {
                    object_name: "Processor".into(),
                    counter_name: "% Processor Time".into(),
                    perfmon_instance_name: "_Total".into(),
                    performance_data_id: Uuid::from_u128(i + 1),
                    performance_source_internal_id: 7,
                    sample_value: 1.0,
                    time_sampled: t0(),
                    time_added: t0(),
                }),
            )
        })
        .collect()
}

const QUERY: &str = "Performance";

fn page(pager: &Pager, token: Option<&str>, now: DateTime<Utc>) -> Result<u64, ExportError> {
    pager
        .page(a(), DataType::Performance, QUERY, token, &rows(), now)
        .map(|p| p.offset)
}

#[test]
fn a_paging_token_issued_before_a_restart_pages_after_it() {
    let mut e = DeterministicEntropy::from_u64(3);
    let pager = Pager::new(PagingKey::generate(&mut e).unwrap())
        .with_page_size(3)
        .unwrap();
    let rows = rows();
    let first = pager
        .page(a(), DataType::Performance, QUERY, None, &rows, t0())
        .unwrap();
    let token = first.next.expect("more");
    let saved = pager.save_keys();
    assert_eq!(format!("{saved:?}"), "SavedPagingKeys(..)");
    drop(pager);
    // The restart: a fresh pager with the saved keys.
    let text = saved.expose().to_owned();
    let restored = Pager::new(PagingKey::generate(&mut e).unwrap())
        .with_page_size(3)
        .unwrap()
        .with_saved_keys(&SavedPagingKeys::new(text))
        .unwrap();
    assert_eq!(
        page(&restored, Some(&token), t0() + Duration::minutes(5)).ok(),
        Some(3)
    );
    // Without the saved keys, the token is refused.
    let fresh = Pager::new(PagingKey::generate(&mut e).unwrap());
    assert!(matches!(
        page(&fresh, Some(&token), t0()),
        Err(ExportError::TokenTampered)
    ));
    // Bad saved text is a typed error.
    let bad = SavedPagingKeys::new(saved.expose().replace("\"version\":1", "\"version\":2"));
    assert!(matches!(
        Pager::new(PagingKey::from_bytes([1; 32])).with_saved_keys(&bad),
        Err(ExportError::State { .. })
    ));
}

#[test]
fn a_rotation_keeps_earlier_tokens_valid_until_they_expire() {
    let mut pager = Pager::new(PagingKey::from_bytes([1; 32]))
        .with_page_size(3)
        .unwrap();
    let old = pager
        .page(a(), DataType::Performance, QUERY, None, &rows(), t0())
        .unwrap()
        .next
        .unwrap();
    let rotated_at = t0() + Duration::minutes(10);
    pager.rotate(PagingKey::from_bytes([2; 32]), rotated_at);
    assert_eq!(pager.retired_keys(), 1);
    // The old token still pages, until its own hour is up.
    assert_eq!(
        page(&pager, Some(&old), t0() + Duration::minutes(59)).ok(),
        Some(3)
    );
    assert!(matches!(
        page(&pager, Some(&old), t0() + Duration::minutes(61)),
        Err(ExportError::TokenExpired { .. })
    ));
    // New tokens are signed with the new key.
    let new = pager
        .page(a(), DataType::Performance, QUERY, None, &rows(), rotated_at)
        .unwrap()
        .next
        .unwrap();
    let only_new = Pager::new(PagingKey::from_bytes([2; 32]));
    assert_eq!(page(&only_new, Some(&new), rotated_at).ok(), Some(3));
    // The rotation survives a restart too.
    let restored = Pager::new(PagingKey::from_bytes([9; 32]))
        .with_page_size(3)
        .unwrap()
        .with_saved_keys(&pager.save_keys())
        .unwrap();
    assert_eq!(
        page(&restored, Some(&old), t0() + Duration::minutes(30)).ok(),
        Some(3)
    );
    assert_eq!(
        page(&restored, Some(&new), t0() + Duration::minutes(30)).ok(),
        Some(3)
    );
    // A rotation long after forgets the key retired before.
    pager.rotate(PagingKey::from_bytes([3; 32]), t0() + Duration::days(1));
    assert_eq!(pager.retired_keys(), 1);
}
