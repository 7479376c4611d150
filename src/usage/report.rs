//! Usage as the admin API and `/account/usage` report it: stored rows plus the batch not
//! written yet, filtered and added up by hour or by UTC day.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use crate::store::{StoreError, StoreSlot, UsageRow};
use crate::time::{date, rfc3339};

use super::UsageRecorder;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Period {
    Hour,
    Day,
}

impl Period {
    fn start(self, hour: i64) -> i64 {
        match self {
            Period::Hour => hour,
            Period::Day => hour - hour.rem_euclid(86_400),
        }
    }

    fn label(self, start: i64) -> String {
        match self {
            Period::Hour => rfc3339(start),
            Period::Day => date(start),
        }
    }
}

pub struct Filter<'a> {
    pub from: i64,
    pub to: i64,
    pub user: Option<&'a str>,
    pub key_id: Option<&'a str>,
}

/// Rows of `(period start, key id) → usage` matching the filter, oldest first.
pub async fn rows(
    store: &StoreSlot,
    recorder: &UsageRecorder,
    filter: &Filter<'_>,
    period: Period,
) -> Result<BTreeMap<(i64, String), UsageRow>, StoreError> {
    let (from_hour, to_hour) = (super::hour_of(filter.from), filter.to);
    let mut all = store
        .read(move |s| s.usage_between(from_hour, to_hour))
        .await?;
    all.extend(recorder.pending());
    let mut out: BTreeMap<(i64, String), UsageRow> = BTreeMap::new();
    for (hour, key_id, row) in all {
        let matches = hour >= from_hour
            && hour < filter.to
            && filter.user.is_none_or(|u| u == row.user)
            && filter.key_id.is_none_or(|k| k == key_id);
        if matches {
            let entry = out.entry((period.start(hour), key_id)).or_default();
            if entry.user.is_empty() {
                entry.user.clone_from(&row.user);
            }
            entry.add(&row);
        }
    }
    Ok(out)
}

/// `GET /admin/usage`: one entry per period and key.
pub fn admin_json(rows: &BTreeMap<(i64, String), UsageRow>, period: Period) -> Value {
    let data: Vec<Value> = rows
        .iter()
        .map(|((start, key_id), row)| {
            json!({
                "period": period.label(*start),
                "user": row.user,
                "key_id": key_id,
                "requests": row.requests,
                "prompt_tokens": row.prompt_tokens,
                "completion_tokens": row.completion_tokens,
                "images": row.images,
                "errors": row.errors,
            })
        })
        .collect();
    json!({"data": data})
}

/// `GET /account/usage`: one entry per day, all of the user's keys added up.
pub fn account_json(rows: &BTreeMap<(i64, String), UsageRow>) -> Value {
    let mut by_day: BTreeMap<i64, UsageRow> = BTreeMap::new();
    for ((start, _), row) in rows {
        by_day.entry(*start).or_default().add(row);
    }
    let data: Vec<Value> = by_day
        .iter()
        .map(|(day, row)| {
            json!({
                "date": date(*day),
                "requests": row.requests,
                "prompt_tokens": row.prompt_tokens,
                "completion_tokens": row.completion_tokens,
                "images": row.images,
                "errors": row.errors,
            })
        })
        .collect();
    json!({"data": data})
}
