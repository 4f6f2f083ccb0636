//! upcase: the uppercase service (see the layout once the server lands).

pub mod cli;
pub mod config;
pub mod transform;
