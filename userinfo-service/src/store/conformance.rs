//! Cases every [`UserInfoStore`] passes, each run as a test on SQLite and on PostgreSQL.

use std::sync::Arc;

use miniprogram_token::Timestamp;

use super::*;
use crate::model::{
    DisclosedFields, Disclosure, DisclosurePosition, Profile, PublicProfile, UtcDay,
};

pub(super) fn profile(id: &str) -> Profile {
    Profile {
        user_id: id.into(),
        real_name: "Real Name".into(),
        phone_number: "+86 13800000000".into(),
        public: PublicProfile {
            avatar: "https://cdn.example.com/a.png".into(),
            nick_name: "Nick".into(),
            gender: "f".into(),
            country_code: "CN".into(),
            province: "Zhejiang".into(),
            city: "Hangzhou".into(),
        },
        updated_at: Timestamp::from_unix_nanos(5),
    }
}

pub async fn upsert_get_and_replace(store: Arc<dyn UserInfoStore>) {
    store.upsert(&profile("u1")).await.unwrap();
    assert_eq!(store.get("u1").await.unwrap(), Some(profile("u1")));
    let mut changed = profile("u1");
    changed.public.nick_name = "Other".into();
    changed.phone_number = String::new();
    store.upsert(&changed).await.unwrap();
    assert_eq!(store.get("u1").await.unwrap(), Some(changed));
}

pub async fn public_profile_and_phone_are_read_separately(store: Arc<dyn UserInfoStore>) {
    store.upsert(&profile("u1")).await.unwrap();
    assert_eq!(
        store.get_public("u1").await.unwrap(),
        Some(profile("u1").public)
    );
    assert_eq!(
        store.phone_number("u1").await.unwrap().as_deref(),
        Some("+86 13800000000")
    );
    assert_eq!(store.get_public("u2").await.unwrap(), None);
    assert_eq!(store.phone_number("u2").await.unwrap(), None);
}

pub async fn delete_removes_and_reports_missing(store: Arc<dyn UserInfoStore>) {
    store.upsert(&profile("u1")).await.unwrap();
    assert!(store.delete("u1", None).await.unwrap());
    assert_eq!(store.get("u1").await.unwrap(), None);
    assert!(!store.delete("u1", None).await.unwrap(), "reported missing");
}

/// Guards the `updated_at <= $2` bound of `delete` and the latest request time kept by
/// `mark_erasure_pending`: a resumed erasure deletes the profile it was requested for, but
/// not one written again after the request (an acknowledged write that a restart must keep).
pub async fn a_bounded_delete_spares_a_profile_written_after_the_erasure(
    store: Arc<dyn UserInfoStore>,
) {
    store.upsert(&profile("u1")).await.unwrap();
    let first = Timestamp::from_unix_nanos(3);
    store.mark_erasure_pending("u1", first).await.unwrap();
    let requested = Timestamp::from_unix_nanos(4);
    store.mark_erasure_pending("u1", requested).await.unwrap();
    assert_eq!(
        store.pending_erasures(10).await.unwrap(),
        vec![("u1".to_owned(), requested)],
        "one record, at the latest request"
    );
    assert!(!store.delete("u1", Some(requested)).await.unwrap());
    assert_eq!(
        store.get("u1").await.unwrap(),
        Some(profile("u1")),
        "written at 5"
    );
    let later = Timestamp::from_unix_nanos(5);
    assert!(store.delete("u1", Some(later)).await.unwrap());
    assert_eq!(store.get("u1").await.unwrap(), None);
}

pub async fn unicode_and_empty_fields_round_trip(store: Arc<dyn UserInfoStore>) {
    let mut p = profile("用户-🙂");
    p.public = PublicProfile {
        nick_name: "小明 🐼".into(),
        ..PublicProfile::default()
    };
    store.upsert(&p).await.unwrap();
    assert_eq!(store.get("用户-🙂").await.unwrap(), Some(p));
}

fn disclosure(user: &str, app: &str, fields: DisclosedFields, day: i64, count: u64) -> Disclosure {
    Disclosure {
        user_id: user.into(),
        app_id: app.into(),
        fields,
        day: UtcDay(day),
        count,
    }
}

use DisclosedFields::{PhoneNumber, PublicProfile as Public};

/// Guards the upsert's `count = disclosures.count + excluded.count`: batches add up.
pub async fn disclosure_batches_add_up_per_key(store: Arc<dyn UserInfoStore>) {
    store.upsert(&profile("u1")).await.unwrap();
    let batch = [
        disclosure("u1", "app-a", Public, 100, 3),
        disclosure("u1", "app-a", PhoneNumber, 100, 1),
    ];
    store.add_disclosures(&batch).await.unwrap();
    store
        .add_disclosures(&[disclosure("u1", "app-a", Public, 100, 997)])
        .await
        .unwrap();
    let rows = store.list_disclosures("u1", None, None, 10).await.unwrap();
    assert_eq!(
        rows,
        [
            disclosure("u1", "app-a", PhoneNumber, 100, 1),
            disclosure("u1", "app-a", Public, 100, 1000),
        ]
    );
}

/// Guards the `WHERE EXISTS` on the insert: a batch holding reads of a user erased since is
/// written for everyone else, and nothing for them.
pub async fn disclosures_of_users_without_a_profile_are_skipped(store: Arc<dyn UserInfoStore>) {
    store.upsert(&profile("u1")).await.unwrap();
    let batch = [
        disclosure("gone", "app-a", Public, 100, 5),
        disclosure("u1", "app-a", Public, 100, 2),
    ];
    store.add_disclosures(&batch).await.unwrap();
    assert_eq!(
        store.list_disclosures("u1", None, None, 10).await.unwrap(),
        [disclosure("u1", "app-a", Public, 100, 2)]
    );
    assert!(
        store
            .list_disclosures("gone", None, None, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

/// Guards the listing's order and its cursor: newest day first, then app and kind
/// descending, each page continuing after the last row of the one before; the app filter.
pub async fn disclosures_page_newest_day_first(store: Arc<dyn UserInfoStore>) {
    store.upsert(&profile("u1")).await.unwrap();
    store.upsert(&profile("u2")).await.unwrap();
    let mut batch = Vec::new();
    for day in [100, 102, 101] {
        for app in ["app-a", "app-b"] {
            batch.push(disclosure("u1", app, Public, day, 1));
        }
    }
    batch.push(disclosure("u1", "app-b", PhoneNumber, 102, 1));
    batch.push(disclosure("u2", "app-a", Public, 103, 1));
    store.add_disclosures(&batch).await.unwrap();

    let mut seen = Vec::new();
    let mut after: Option<DisclosurePosition> = None;
    loop {
        let page = store
            .list_disclosures("u1", None, after.as_ref(), 3)
            .await
            .unwrap();
        let Some(last) = page.last() else { break };
        after = Some(DisclosurePosition {
            day: last.day,
            app_id: last.app_id.clone(),
            fields: last.fields,
        });
        seen.extend(page.iter().map(|d| (d.day.0, d.app_id.clone(), d.fields)));
    }
    let expected: Vec<_> = [
        (102, "app-b", PhoneNumber),
        (102, "app-b", Public),
        (102, "app-a", Public),
        (101, "app-b", Public),
        (101, "app-a", Public),
        (100, "app-b", Public),
        (100, "app-a", Public),
    ]
    .into_iter()
    .map(|(day, app, fields)| (day, app.to_owned(), fields))
    .collect();
    assert_eq!(seen, expected);

    let only_a = store
        .list_disclosures("u1", Some("app-a"), None, 10)
        .await
        .unwrap();
    assert_eq!(
        only_a.iter().map(|d| d.day.0).collect::<Vec<_>>(),
        [102, 101, 100]
    );
    assert!(only_a.iter().all(|d| d.app_id == "app-a"));
}

/// Guards `sweep_disclosures`: days before the cut-off go, the rest stay.
pub async fn the_sweep_deletes_days_before_the_cut_off(store: Arc<dyn UserInfoStore>) {
    store.upsert(&profile("u1")).await.unwrap();
    let batch: Vec<_> = (98..=101)
        .map(|day| disclosure("u1", "app-a", Public, day, 1))
        .collect();
    store.add_disclosures(&batch).await.unwrap();
    assert_eq!(store.sweep_disclosures(UtcDay(100)).await.unwrap(), 2);
    let days: Vec<_> = store
        .list_disclosures("u1", None, None, 10)
        .await
        .unwrap()
        .iter()
        .map(|d| d.day.0)
        .collect();
    assert_eq!(days, [101, 100]);
}

/// Guards the foreign key's `ON DELETE CASCADE`: erasing a profile takes the user's ledger
/// rows with it, and no one else's.
pub async fn deleting_a_profile_deletes_its_disclosures(store: Arc<dyn UserInfoStore>) {
    store.upsert(&profile("u1")).await.unwrap();
    store.upsert(&profile("u2")).await.unwrap();
    let batch = [
        disclosure("u1", "app-a", Public, 100, 1),
        disclosure("u2", "app-a", Public, 100, 1),
    ];
    store.add_disclosures(&batch).await.unwrap();
    assert!(store.delete("u1", None).await.unwrap());
    assert!(
        store
            .list_disclosures("u1", None, None, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store
            .list_disclosures("u2", None, None, 10)
            .await
            .unwrap()
            .len(),
        1
    );
    assert!(
        !store.delete("u1", None).await.unwrap(),
        "a repeat finds nothing"
    );
}

sql_backend::conformance!(
    crate::store::open;
    upsert_get_and_replace,
    public_profile_and_phone_are_read_separately,
    delete_removes_and_reports_missing,
    a_bounded_delete_spares_a_profile_written_after_the_erasure,
    unicode_and_empty_fields_round_trip,
    disclosure_batches_add_up_per_key,
    disclosures_of_users_without_a_profile_are_skipped,
    disclosures_page_newest_day_first,
    the_sweep_deletes_days_before_the_cut_off,
    deleting_a_profile_deletes_its_disclosures,
);
