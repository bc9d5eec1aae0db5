//! The plugin's tables. Applied migrations never change; new ones get new versions.

use eventhost_plugin::Migration;

pub fn all() -> Vec<Migration> {
    vec![Migration {
        version: 1,
        name: "user_stats".into(),
        sql: "
CREATE TABLE user_stats (
    user_id          uuid PRIMARY KEY,
    active           boolean NOT NULL DEFAULT true,
    role             text,
    bid_count        bigint NOT NULL DEFAULT 0,
    total_bid_amount numeric(20, 2) NOT NULL DEFAULT 0,
    -- 'event': made by the event path; 'repair': made by on-read repair.
    created_via      text NOT NULL CHECK (created_via IN ('event', 'repair')),
    user_created_at  timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);
-- One row per counted bid: a bid is counted once even if two events carry it.
CREATE TABLE counted_bids (
    bid_id    uuid PRIMARY KEY,
    user_id   uuid NOT NULL,
    amount    numeric(20, 2) NOT NULL,
    placed_at timestamptz
);
"
        .into(),
    }]
}
