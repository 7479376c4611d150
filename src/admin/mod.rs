//! The admin side: the HTTP API on `admin.listen` (server) and the CLI over it (client).

pub mod client;
pub mod server;
