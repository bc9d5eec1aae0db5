//! The event's payload and headers, typed.

use crate::{Event, HandlerError};
use serde::de::DeserializeOwned;
use serde_json::{Map, Value as Json};

pub trait EventExt {
    /// `data` as your own type; a payload that does not fit is a permanent failure naming
    /// the event type and what did not fit.
    fn payload<T: DeserializeOwned>(&self) -> Result<T, HandlerError>;

    /// `data` as a JSON object; anything else is a permanent failure.
    fn payload_object(&self) -> Result<Map<String, Json>, HandlerError>;

    /// The first header (extension attribute or transport header) called `name`.
    fn header(&self, name: &str) -> Option<&str>;
}

impl EventExt for Event {
    fn payload<T: DeserializeOwned>(&self) -> Result<T, HandlerError> {
        serde_json::from_str(&self.data).map_err(|e| {
            HandlerError::Permanent(format!("{} payload does not fit: {e}", self.type_))
        })
    }

    fn payload_object(&self) -> Result<Map<String, Json>, HandlerError> {
        match serde_json::from_str(&self.data) {
            Ok(Json::Object(object)) => Ok(object),
            Ok(_) => Err(HandlerError::Permanent(format!(
                "{} payload must be a JSON object",
                self.type_
            ))),
            Err(e) => Err(HandlerError::Permanent(format!(
                "{} payload is not JSON: {e}",
                self.type_
            ))),
        }
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}
