//! The error of every account operation of the Rust API and the control interface.

#[derive(Debug, thiserror::Error)]
pub enum EmulatorError {
    #[error("not found: {0}")]
    NotFound(String),
    #[error("already exists: {0}")]
    AlreadyExists(String),
    #[error("invalid path: {0}")]
    InvalidPath(String),
    #[error("not a folder: {0}")]
    NotAFolder(String),
    #[error("not a file: {0}")]
    NotAFile(String),
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}
