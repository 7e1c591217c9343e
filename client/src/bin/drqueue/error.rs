//! The CLI's own errors: what the master said (through the client library),
//! or what went wrong here before or without a master.

use drqueue_client::ClientError;

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The master refused, failed, or could not be reached.
    #[error("{0}")]
    Master(#[from] ClientError),
    /// The command line or a job file asks for something impossible.
    #[error("{0}")]
    Input(String),
    /// Work done here (run-local, writing output) failed.
    #[error("{0}")]
    Local(String),
}

pub type CliResult<T> = Result<T, CliError>;
