//! Converting `db.value`s to PostgreSQL parameters and result cells back to `db.value`s.

use crate::runtime::bindings::db::{DbError, Value};
use sqlx::postgres::types::Oid;
use sqlx::postgres::{PgArguments, PgRow, PgTypeInfo, PgValueFormat, PgValueRef, Postgres};
use sqlx::query::Query;
use sqlx::{Column, Decode, Encode, Row, Type, TypeInfo, ValueRef};

pub fn error(message: impl Into<String>) -> DbError {
    DbError {
        code: String::new(),
        message: message.into(),
    }
}

/// A NULL parameter whose type PostgreSQL infers from the statement (OID 0), so a plugin
/// can pass `null` for a column of any type.
struct UntypedNull;

impl Type<Postgres> for UntypedNull {
    fn type_info() -> PgTypeInfo {
        PgTypeInfo::with_oid(Oid(0))
    }
}

impl Encode<'_, Postgres> for UntypedNull {
    fn encode_by_ref(
        &self,
        _buf: &mut sqlx::postgres::PgArgumentBuffer,
    ) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
        Ok(sqlx::encode::IsNull::Yes)
    }
}

/// The parameters' types as text. sqlx caches a prepared statement by its SQL alone, but a
/// plugin may bind `null` one time and `int64` the next to the same `$1`; the host keys the
/// statement by SQL *and* this signature so each combination is prepared with its own types.
pub fn signature(params: &[Value]) -> String {
    params
        .iter()
        .map(|p| match p {
            Value::Null => "n",
            Value::Boolean(_) => "b",
            Value::Int32(_) => "i4",
            Value::Int64(_) => "i8",
            Value::Float64(_) => "f8",
            Value::Text(_) => "t",
            Value::Json(_) => "j",
            Value::Timestamp(_) => "ts",
            Value::Uuid(_) => "u",
            Value::Bytes(_) => "by",
        })
        .collect::<Vec<_>>()
        .join(",")
}

pub fn bind<'q>(
    mut query: Query<'q, Postgres, PgArguments>,
    params: Vec<Value>,
) -> Result<Query<'q, Postgres, PgArguments>, DbError> {
    for (i, param) in params.into_iter().enumerate() {
        let n = i + 1;
        query = match param {
            Value::Null => query.bind(UntypedNull),
            Value::Boolean(b) => query.bind(b),
            Value::Int32(v) => query.bind(v),
            Value::Int64(v) => query.bind(v),
            Value::Float64(v) => query.bind(v),
            Value::Text(s) => query.bind(s),
            Value::Json(s) => {
                let json: serde_json::Value = serde_json::from_str(&s)
                    .map_err(|e| error(format!("parameter ${n} is not valid JSON: {e}")))?;
                query.bind(sqlx::types::Json(json))
            }
            Value::Timestamp(s) => {
                let t = chrono::DateTime::parse_from_rfc3339(&s).map_err(|e| {
                    error(format!(
                        "parameter ${n} is not an RFC 3339 timestamp ({e}): {s:?}"
                    ))
                })?;
                query.bind(t.with_timezone(&chrono::Utc))
            }
            Value::Uuid(s) => {
                let u = uuid::Uuid::parse_str(&s)
                    .map_err(|_| error(format!("parameter ${n} is not a UUID: {s:?}")))?;
                query.bind(u)
            }
            Value::Bytes(b) => query.bind(b),
        };
    }
    Ok(query)
}

// Type OIDs from PostgreSQL's pg_type.dat; stable across versions.
const BOOL: u32 = 16;
const BYTEA: u32 = 17;
const NAME: u32 = 19;
const INT8: u32 = 20;
const INT2: u32 = 21;
const INT4: u32 = 23;
const TEXT: u32 = 25;
const JSON: u32 = 114;
const FLOAT4: u32 = 700;
const FLOAT8: u32 = 701;
const UNKNOWN: u32 = 705;
const BPCHAR: u32 = 1042;
const VARCHAR: u32 = 1043;
const TIMESTAMP: u32 = 1114;
const TIMESTAMPTZ: u32 = 1184;
const VOID: u32 = 2278;
const UUID: u32 = 2950;
const JSONB: u32 = 3802;

pub fn decode_row(row: &PgRow) -> Result<Vec<Value>, DbError> {
    (0..row.len()).map(|i| decode_cell(row, i)).collect()
}

fn decode_cell(row: &PgRow, i: usize) -> Result<Value, DbError> {
    let raw = row.try_get_raw(i).map_err(|e| error(e.to_string()))?;
    if raw.is_null() {
        return Ok(Value::Null);
    }
    let column = &row.columns()[i];
    let type_info = column.type_info();
    let oid = type_info.oid().map(|o| o.0).unwrap_or(0);
    let cell = match oid {
        BOOL => Value::Boolean(get(raw)?),
        INT2 => Value::Int32(get::<i16>(raw)?.into()),
        INT4 => Value::Int32(get(raw)?),
        INT8 => Value::Int64(get(raw)?),
        FLOAT4 => Value::Float64(get::<f32>(raw)?.into()),
        FLOAT8 => Value::Float64(get(raw)?),
        TEXT | VARCHAR | BPCHAR | NAME | UNKNOWN => Value::Text(get(raw)?),
        // Passed through as text: parsing a plugin's JSON would multiply it in memory.
        JSON | JSONB => Value::Json(json_text(raw, oid == JSONB).map_err(|e| cell_error(column.name(), &e))?),
        TIMESTAMPTZ | TIMESTAMP => {
            Value::Timestamp(timestamp(raw).map_err(|e| cell_error(column.name(), &e))?)
        }
        UUID => Value::Uuid(get::<uuid::Uuid>(raw)?.to_string()),
        BYTEA => Value::Bytes(get(raw)?),
        VOID => Value::Null,
        _ => {
            return Err(error(format!(
                "column `{}` has type {}, which db values do not carry; cast it in SQL (e.g. `{}::text`)",
                column.name(),
                type_info.name(),
                column.name()
            )))
        }
    };
    Ok(cell)
}

fn cell_error(column: &str, reason: &str) -> DbError {
    error(format!("column `{column}`: {reason}"))
}

/// JSON as PostgreSQL sent it: text, or for `jsonb` in binary, a version byte then text.
fn json_text(raw: PgValueRef<'_>, jsonb: bool) -> Result<String, String> {
    let bytes = raw.as_bytes().map_err(|e| e.to_string())?;
    let text = match (raw.format(), jsonb) {
        (PgValueFormat::Binary, true) => match bytes.split_first() {
            Some((1, rest)) => rest,
            _ => return Err("unknown jsonb binary version".into()),
        },
        _ => bytes,
    };
    String::from_utf8(text.to_vec()).map_err(|e| e.to_string())
}

/// Microseconds from 2000-01-01 (PostgreSQL's epoch) to 1970-01-01.
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;

/// A timestamp, decoded by hand: `infinity` and dates chrono cannot hold are errors, never
/// an overflow (which would panic in a plain `NaiveDateTime + TimeDelta`).
fn timestamp(raw: PgValueRef<'_>) -> Result<String, String> {
    let out_of_range = "timestamp out of the range db values carry; cast it in SQL (`::text`)";
    if raw.format() == PgValueFormat::Text {
        let text = raw.as_str().map_err(|e| e.to_string())?;
        return Err(format!("{out_of_range}: {text}"));
    }
    let bytes: [u8; 8] = raw
        .as_bytes()
        .map_err(|e| e.to_string())?
        .try_into()
        .map_err(|_| "a timestamp must be 8 bytes".to_string())?;
    let micros = i64::from_be_bytes(bytes);
    micros
        .checked_add(PG_EPOCH_MICROS)
        .and_then(chrono::DateTime::from_timestamp_micros)
        .map(rfc3339)
        .ok_or_else(|| out_of_range.to_string())
}

fn get<'r, T: Decode<'r, Postgres>>(raw: PgValueRef<'r>) -> Result<T, DbError> {
    T::decode(raw).map_err(|e| error(format!("cannot decode column: {e}")))
}

fn rfc3339(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

/// What a row costs the host to hold, counted on the wire before it is decoded, for
/// `limits.db_max_result_bytes`: its values plus a cell's bookkeeping.
pub fn row_bytes(row: &PgRow) -> usize {
    const CELL: usize = 8;
    (0..row.len())
        .map(|i| {
            CELL + row
                .try_get_raw(i)
                .ok()
                .and_then(|raw| raw.as_bytes().ok().map(<[u8]>::len))
                .unwrap_or(0)
        })
        .sum()
}
