//! The one place where failures become what an AWS client expects to see.
//!
//! Client errors (4xx) and service errors (5xx) of the User API are `ApiError`s: a status, the
//! exception name boto3 maps to its exception classes (sent as `x-amzn-ErrorType`), and a message,
//! rendered as `{"Type":"User"|"Service","Message":..,"message":..}`. Function errors are not
//! `ApiError`s: they are 200 responses with `X-Amz-Function-Error` (see `types::InvokeOutcome`).

use std::fmt;

/// AWS's exception names for the User API, with their HTTP status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    ResourceNotFound,
    ResourceConflict,
    InvalidParameterValue,
    InvalidRequestContent,
    RequestTooLarge,
    TooManyRequests,
    Service,
    /// Lambda's name when the function's instance could not be started.
    ResourceNotReady,
    /// The route exists for another method, or not at all.
    UnknownOperation,
    /// The request could not be parsed as HTTP at all.
    BadRequest,
    /// The server is shutting down and takes no new work.
    ServiceUnavailable,
    PreconditionFailed,
    /// A request member fails its model constraint where AWS answers ValidationException (e.g. an
    /// alias name that matches no pattern).
    Validation,
    /// AddPermission would make the policy bigger than AWS's 20 KB.
    PolicyLengthExceeded,
    /// SigV4 verification failed (wrong signature).
    InvalidSignature,
    /// SigV4 verification failed (unknown access key).
    UnrecognizedClient,
    /// Authentication is on and the request carries no `Authorization` header.
    MissingAuthenticationToken,
    /// The `Authorization` header is not a complete SigV4 header, or names no date.
    IncompleteSignature,
    /// The caller may not use the User API at all (a connection from an instance's uid).
    AccessDenied,
}

impl ErrorKind {
    pub fn status(self) -> u16 {
        match self {
            ErrorKind::ResourceNotFound => 404,
            ErrorKind::ResourceConflict => 409,
            ErrorKind::InvalidParameterValue
            | ErrorKind::InvalidRequestContent
            | ErrorKind::BadRequest => 400,
            ErrorKind::RequestTooLarge => 413,
            ErrorKind::TooManyRequests => 429,
            ErrorKind::Service => 500,
            ErrorKind::ResourceNotReady => 502,
            ErrorKind::UnknownOperation => 404,
            ErrorKind::ServiceUnavailable => 503,
            ErrorKind::PreconditionFailed => 412,
            ErrorKind::PolicyLengthExceeded | ErrorKind::Validation => 400,
            ErrorKind::InvalidSignature
            | ErrorKind::UnrecognizedClient
            | ErrorKind::MissingAuthenticationToken
            | ErrorKind::IncompleteSignature
            | ErrorKind::AccessDenied => 403,
        }
    }

    /// The `x-amzn-ErrorType` value (botocore maps it to `client.exceptions.<Name>`).
    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::ResourceNotFound => "ResourceNotFoundException",
            ErrorKind::ResourceConflict => "ResourceConflictException",
            ErrorKind::InvalidParameterValue => "InvalidParameterValueException",
            ErrorKind::InvalidRequestContent => "InvalidRequestContentException",
            ErrorKind::RequestTooLarge => "RequestTooLargeException",
            ErrorKind::TooManyRequests => "TooManyRequestsException",
            ErrorKind::Service => "ServiceException",
            ErrorKind::ResourceNotReady => "ResourceNotReadyException",
            ErrorKind::UnknownOperation => "UnknownOperationException",
            ErrorKind::BadRequest => "BadRequestException",
            ErrorKind::ServiceUnavailable => "ServiceUnavailableException",
            ErrorKind::PreconditionFailed => "PreconditionFailedException",
            ErrorKind::PolicyLengthExceeded => "PolicyLengthExceededException",
            ErrorKind::Validation => "ValidationException",
            ErrorKind::InvalidSignature => "InvalidSignatureException",
            ErrorKind::UnrecognizedClient => "UnrecognizedClientException",
            ErrorKind::MissingAuthenticationToken => "MissingAuthenticationTokenException",
            ErrorKind::IncompleteSignature => "IncompleteSignatureException",
            ErrorKind::AccessDenied => "AccessDeniedException",
        }
    }

    /// `User` for the caller's mistakes, `Service` for ours (the `Type` field of the body).
    pub fn fault(self) -> &'static str {
        if self.status() >= 500 {
            "Service"
        } else {
            "User"
        }
    }
}

/// A User API error: rendered by `render` with AWS's shape.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    pub kind: ErrorKind,
    pub message: String,
    /// TooManyRequestsException carries a `Reason` (e.g. `ReservedFunctionConcurrentInvocationLimitExceeded`).
    pub reason: Option<&'static str>,
}

impl ApiError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        ApiError {
            kind,
            message: message.into(),
            reason: None,
        }
    }

    pub fn not_found_function(name: &str) -> Self {
        Self::new(
            ErrorKind::ResourceNotFound,
            format!(
                "Function not found: {}",
                crate::model::types::function_arn(name)
            ),
        )
    }

    pub fn invalid_param(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidParameterValue, message)
    }

    pub fn service(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Service, message)
    }

    pub fn throttled(reason: &'static str) -> Self {
        ApiError {
            kind: ErrorKind::TooManyRequests,
            message: "Rate Exceeded.".to_string(),
            reason: Some(reason),
        }
    }

    pub fn status(&self) -> u16 {
        self.kind.status()
    }

    /// The JSON body AWS sends: `{"Type":"User","Message":"...","message":"..."}` (+ `Reason`).
    pub fn body(&self) -> Vec<u8> {
        let msg = serde_json::Value::String(self.message.clone()).to_string();
        let mut body = format!(
            r#"{{"Type":"{}","Message":{msg},"message":{msg}"#,
            self.kind.fault()
        );
        if let Some(reason) = self.reason {
            body.push_str(&format!(r#","Reason":"{reason}""#));
        }
        body.push('}');
        body.into_bytes()
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind.name(), self.message)
    }
}

impl std::error::Error for ApiError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_has_aws_shape() {
        let e = ApiError::not_found_function("f\"x");
        let v: serde_json::Value = serde_json::from_slice(&e.body()).unwrap();
        assert_eq!(v["Type"], "User");
        assert_eq!(v["Message"], v["message"]);
        assert!(v["Message"].as_str().unwrap().contains("function:f\"x"));
        assert_eq!(e.status(), 404);
        assert_eq!(e.kind.name(), "ResourceNotFoundException");
    }

    #[test]
    fn throttle_carries_reason() {
        let e = ApiError::throttled("ReservedFunctionConcurrentInvocationLimitExceeded");
        let v: serde_json::Value = serde_json::from_slice(&e.body()).unwrap();
        assert_eq!(
            v["Reason"],
            "ReservedFunctionConcurrentInvocationLimitExceeded"
        );
        assert_eq!(e.status(), 429);
    }

    #[test]
    fn service_fault() {
        assert_eq!(ApiError::service("x").kind.fault(), "Service");
    }
}
