//! Decoding profile rows, shared by the SQLite and PostgreSQL backends.

use miniprogram_token::Timestamp;
use sqlx::{ColumnIndex, Decode, Row, Type};

use crate::profiles::{Profile, PublicProfile};

/// The six public columns; the only ones the public read path selects.
pub fn public_profile<'r, R>(row: &'r R) -> Result<PublicProfile, sqlx::Error>
where
    R: Row,
    &'static str: ColumnIndex<R>,
    String: Decode<'r, R::Database> + Type<R::Database>,
{
    Ok(PublicProfile {
        avatar: row.try_get("avatar")?,
        nick_name: row.try_get("nick_name")?,
        gender: row.try_get("gender")?,
        country_code: row.try_get("country_code")?,
        province: row.try_get("province")?,
        city: row.try_get("city")?,
    })
}

/// A whole profile row.
pub fn profile<'r, R>(row: &'r R) -> Result<Profile, sqlx::Error>
where
    R: Row,
    &'static str: ColumnIndex<R>,
    String: Decode<'r, R::Database> + Type<R::Database>,
    i64: Decode<'r, R::Database> + Type<R::Database>,
{
    Ok(Profile {
        user_id: row.try_get("user_id")?,
        real_name: row.try_get("real_name")?,
        phone_number: row.try_get("phone_number")?,
        public: public_profile(row)?,
        updated_at: Timestamp::from_unix_nanos(row.try_get("updated_at")?),
    })
}
