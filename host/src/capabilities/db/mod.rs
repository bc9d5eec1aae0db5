//! The `db` import: SQL confined to the plugin's own schema, inside the invocation's
//! transaction. Provisioning (role, schema, pool) and the plugin's migrations live here too.

pub mod migrate;
pub mod provision;
mod role;
mod session;
mod session_sql;
mod statement;
mod values;
mod wire;

pub use provision::PluginIdentity;
pub use role::schema_name;
pub use session::{DbSession, ResultCaps};

use super::HostState;
use crate::runtime::bindings::db::{DbError, Host, Rows, Value};

impl Host for HostState {
    async fn query(&mut self, sql: String, params: Vec<Value>) -> Result<Rows, DbError> {
        self.db.query(sql, params).await
    }

    async fn execute(&mut self, sql: String, params: Vec<Value>) -> Result<u64, DbError> {
        self.db.execute(sql, params).await
    }
}
