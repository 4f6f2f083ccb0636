//! upcase: the uppercase service (see the layout once the server lands).

pub mod transform;
