//! Operator commands that are not the long-running pipeline.

pub mod derive;
pub mod organizations;
pub mod redrive;
pub mod replay;
pub mod resend;
