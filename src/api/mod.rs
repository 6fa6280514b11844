//! The object model shared by the server and the agent: the resource table, object
//! metadata helpers, selectors, validation, defaulting, patches and Status errors.
//! Nothing in here does I/O.

pub mod apply;
pub mod convert;
pub mod defaults;
pub mod meta;
pub mod patch;
pub mod printers;
pub mod protobuf;
pub mod resources;
pub mod schema;
pub mod selector;
pub mod status;
pub mod strategic;
pub mod validation;

pub use status::{ApiError, FieldError};
