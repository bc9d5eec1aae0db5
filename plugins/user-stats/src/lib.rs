//! user-stats: per-user statistics kept from user and bid events, with on-read repair.
//!
//! * `user.created` creates the stats row once (`ON CONFLICT DO NOTHING`), marked as
//!   created by the event path;
//! * `user.activated` / `user.deactivated` / `user.role.changed` update it;
//! * `bid.placed` counts each bid exactly once (keyed by bid id, not by event id);
//! * `GET stats/{user_id}` answers reads and repairs a missing row after asking `auth`.

mod migrations;
mod payload;
mod read;
mod stats;

use eventhost_plugin::log::{log, Level};
use eventhost_plugin::{
    export_plugin, Event, EventExt, HandlerError, Migration, Request, Response,
};

struct UserStats;

impl eventhost_plugin::Handler for UserStats {
    fn subscriptions() -> Vec<String> {
        vec!["user.#".into(), "bid.placed".into()]
    }

    fn handle(event: Event) -> Result<(), HandlerError> {
        let data = event.payload_object()?;
        match event.type_.as_str() {
            "user.created" => stats::user_created(&payload::UserCreated::from_json(&data)?),
            "user.activated" => stats::set_active(&payload::user_id(&data)?, true),
            "user.deactivated" => stats::set_active(&payload::user_id(&data)?, false),
            "user.role.changed" => stats::set_role(&payload::RoleChanged::from_json(&data)?),
            "bid.placed" => stats::bid_placed(&payload::BidPlaced::from_json(&data)?),
            other => {
                // Subscribed through `user.#`: new user event types are not errors.
                log(Level::Debug, &format!("ignoring event type {other}"));
                Ok(())
            }
        }
    }
}

impl eventhost_plugin::Migrations for UserStats {
    fn migrations() -> Vec<Migration> {
        migrations::all()
    }
}

impl eventhost_plugin::Reader for UserStats {
    fn read(request: Request) -> Response {
        read::route(request)
    }
}

export_plugin!(UserStats);
