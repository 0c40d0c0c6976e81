//! Cases every [`ProfileStore`] passes, and a macro making one test per case per backend.

use std::sync::Arc;

use miniprogram_token::Timestamp;

use super::*;
use crate::profiles::{Profile, PublicProfile};

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
    store.upsert_profile(&profile("u1")).await.unwrap();
    assert_eq!(store.get_profile("u1").await.unwrap(), profile("u1"));
    let mut changed = profile("u1");
    changed.public.nick_name = "Other".into();
    changed.phone_number = String::new();
    store.upsert_profile(&changed).await.unwrap();
    assert_eq!(store.get_profile("u1").await.unwrap(), changed);
    assert_eq!(store.count_profiles().await.unwrap(), 1);
}

pub async fn public_profile_and_phone_are_read_separately(store: Arc<dyn ProfileStore>) {
    store.upsert_profile(&profile("u1")).await.unwrap();
    assert_eq!(
        store.get_public_profile("u1").await.unwrap(),
        profile("u1").public
    );
    assert_eq!(
        store.get_phone_number("u1").await.unwrap(),
        "+86 13800000000"
    );
    assert!(matches!(
        store.get_public_profile("u2").await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        store.get_phone_number("u2").await,
        Err(StoreError::NotFound)
    ));
}

pub async fn delete_removes_and_reports_missing(store: Arc<dyn ProfileStore>) {
    store.upsert_profile(&profile("u1")).await.unwrap();
    store.delete_profile("u1").await.unwrap();
    assert!(matches!(
        store.get_profile("u1").await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        store.delete_profile("u1").await,
        Err(StoreError::NotFound)
    ));
}

pub async fn unicode_and_empty_fields_round_trip(store: Arc<dyn ProfileStore>) {
    let mut p = profile("用户-🙂");
    p.public = PublicProfile {
        nick_name: "小明 🐼".into(),
        ..PublicProfile::default()
    };
    store.upsert_profile(&p).await.unwrap();
    assert_eq!(store.get_profile("用户-🙂").await.unwrap(), p);
}

/// Makes one `#[tokio::test]` per conformance case, each on a fresh store from `$factory`.
#[macro_export]
macro_rules! profile_store_conformance {
    ($factory:path) => {
        $crate::profile_store_conformance!(@cases $factory,
            upsert_get_and_replace,
            public_profile_and_phone_are_read_separately,
            delete_removes_and_reports_missing,
            unicode_and_empty_fields_round_trip,
        );
    };
    (@cases $factory:path, $($case:ident),+ $(,)?) => {
        $(
            #[tokio::test]
            async fn $case() {
                let Some((store, _guard)) = $factory().await else { return };
                $crate::store::conformance::$case(store).await;
            }
        )+
    };
}
