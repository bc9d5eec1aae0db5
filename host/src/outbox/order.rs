//! The per-aggregate order rule, applied to one claim.
//!
//! A claimed row may be published only if every earlier pending row of its aggregate is
//! in the same claim (it is then sent first, on the same channel) or already confirmed.
//! The claim brings each row's nearest earlier pending row: if that one is not claimed
//! here (another relay holds it, or it waits for a retry), the row and every later row
//! of its aggregate in this claim wait.

use super::store::ClaimedRow;
use chrono::{DateTime, Utc};
use std::collections::{HashMap, HashSet};

/// Why a claimed row is not published now.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Hold {
    /// An earlier event of the aggregate is in another relay's batch: try again soon.
    Busy,
    /// An earlier event of the aggregate waits for a retry until then.
    Retry(DateTime<Utc>),
}

/// For each row (in claim order): `None` to publish, or why it waits.
pub fn publishable(rows: &[ClaimedRow]) -> Vec<Option<Hold>> {
    let claimed: HashSet<i64> = rows.iter().map(|r| r.seq).collect();
    let mut held: HashMap<(&str, &str), Hold> = HashMap::new();
    rows.iter()
        .map(|row| {
            let aggregate = (row.aggregate_type.as_str(), row.aggregate_id.as_str());
            if let Some(hold) = held.get(&aggregate) {
                return Some(*hold);
            }
            row.previous_seq.filter(|seq| !claimed.contains(seq))?;
            let hold = match row.previous_retry_at {
                Some(at) => Hold::Retry(at),
                None => Hold::Busy,
            };
            held.insert(aggregate, hold);
            Some(hold)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn row(seq: i64, aggregate: &str, previous: Option<i64>, retry: bool) -> ClaimedRow {
        ClaimedRow {
            ctid: format!("(0,{seq})"),
            seq,
            event_id: uuid::Uuid::new_v4(),
            aggregate_type: "user".into(),
            aggregate_id: aggregate.into(),
            event_type: "user.updated".into(),
            source: "tests".into(),
            payload: sqlx::types::Json(serde_json::value::to_raw_value(&json!({})).unwrap()),
            schema_version: 1,
            occurred_at: Utc::now(),
            headers: json!({}),
            previous_seq: previous,
            previous_retry_at: retry.then(Utc::now),
        }
    }

    #[test]
    fn a_row_goes_when_its_predecessors_are_in_the_claim() {
        let rows = [
            row(1, "a", None, false),
            row(2, "a", Some(1), false),
            row(3, "b", None, false),
        ];
        assert_eq!(publishable(&rows), vec![None, None, None]);
    }

    #[test]
    fn a_predecessor_elsewhere_holds_the_rest_of_its_aggregate_only() {
        let rows = [
            row(5, "a", Some(4), false), // 4 is in another relay's batch
            row(6, "b", None, false),
            row(7, "a", Some(5), false), // 5 is claimed here, but held
        ];
        assert_eq!(
            publishable(&rows),
            vec![Some(Hold::Busy), None, Some(Hold::Busy)]
        );
    }

    #[test]
    fn a_retrying_predecessor_passes_its_retry_time_on() {
        let rows = [row(9, "a", Some(3), true), row(10, "a", Some(9), false)];
        let holds = publishable(&rows);
        assert!(matches!(holds[0], Some(Hold::Retry(_))));
        assert_eq!(holds[0], holds[1]);
    }
}
