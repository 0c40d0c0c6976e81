//! Cases every [`ProfileStore`] passes, each run as a test on SQLite and on PostgreSQL.

use std::sync::Arc;

use miniprogram_token::Timestamp;

use super::*;
use crate::model::{Profile, PublicProfile};

fn profile(id: &str) -> Profile {
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

pub async fn upsert_get_and_replace(store: Arc<dyn ProfileStore>) {
    store.upsert(&profile("u1")).await.unwrap();
    assert_eq!(store.get("u1").await.unwrap(), Some(profile("u1")));
    let mut changed = profile("u1");
    changed.public.nick_name = "Other".into();
    changed.phone_number = String::new();
    store.upsert(&changed).await.unwrap();
    assert_eq!(store.get("u1").await.unwrap(), Some(changed));
}

pub async fn public_profile_and_phone_are_read_separately(store: Arc<dyn ProfileStore>) {
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

pub async fn delete_removes_and_reports_missing(store: Arc<dyn ProfileStore>) {
    store.upsert(&profile("u1")).await.unwrap();
    assert!(store.delete("u1").await.unwrap());
    assert_eq!(store.get("u1").await.unwrap(), None);
    assert!(!store.delete("u1").await.unwrap(), "reported missing");
}

pub async fn unicode_and_empty_fields_round_trip(store: Arc<dyn ProfileStore>) {
    let mut p = profile("用户-🙂");
    p.public = PublicProfile {
        nick_name: "小明 🐼".into(),
        ..PublicProfile::default()
    };
    store.upsert(&p).await.unwrap();
    assert_eq!(store.get("用户-🙂").await.unwrap(), Some(p));
}

sql_backend::conformance!(
    crate::store::open;
    upsert_get_and_replace,
    public_profile_and_phone_are_read_separately,
    delete_removes_and_reports_missing,
    unicode_and_empty_fields_round_trip,
);
