//! The CLI's side of the admin API. While a door service runs it holds the gallery (and the
//! camera), so `edge enroll` and `edge gallery ...` ask it instead of writing the files: the
//! change is then in force at the door at once, and authorised by the admin PIN like any
//! other admin's.

use reqwest::blocking::{multipart, Client, Response};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A call the service answered with an error, or could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("door service on {socket}: {message} (HTTP {status})")]
    Refused {
        socket: String,
        status: u16,
        message: String,
    },
    #[error("door service on {socket}: {source}")]
    Http {
        socket: String,
        source: reqwest::Error,
    },
    #[error("door service on {socket}: the event stream broke: {source}")]
    Stream {
        socket: String,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Photo {
        path: String,
        source: std::io::Error,
    },
}

/// A session with the door service on its Unix socket.
pub struct AdminClient {
    http: Client,
    socket: PathBuf,
    token: String,
}

impl AdminClient {
    /// True when a service answers on `socket`; false when none runs (the CLI then works on
    /// the gallery files itself, under their lock).
    pub fn service_answers(socket: &Path) -> bool {
        std::os::unix::net::UnixStream::connect(socket).is_ok()
    }

    /// Open a session with the admin PIN.
    pub fn login(socket: &Path, pin: &str) -> Result<Self, ClientError> {
        let http = Client::builder()
            .unix_socket(socket)
            // Enrolling from photos runs the models on the door: minutes on a slow board.
            .timeout(Duration::from_secs(600))
            .build()
            .map_err(|source| ClientError::Http {
                socket: socket.display().to_string(),
                source,
            })?;
        let mut client = Self {
            http,
            socket: socket.to_path_buf(),
            token: String::new(),
        };
        let request = client
            .http
            .post(client.url("/api/v1/session"))
            .json(&json!({ "pin": pin }));
        let session = client.send(request)?;
        client.token = session["token"].as_str().unwrap_or_default().to_string();
        Ok(client)
    }

    fn url(&self, path: &str) -> String {
        // The host is not used on a Unix socket; it names the service in its logs.
        format!("http://door{path}")
    }

    fn authed(
        &self,
        request: reqwest::blocking::RequestBuilder,
    ) -> reqwest::blocking::RequestBuilder {
        request.bearer_auth(&self.token)
    }

    fn http_error(&self, source: reqwest::Error) -> ClientError {
        ClientError::Http {
            socket: self.socket.display().to_string(),
            source,
        }
    }

    fn answer(&self, response: Response) -> Result<Response, ClientError> {
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let body: Value = response.json().unwrap_or(Value::Null);
        Err(ClientError::Refused {
            socket: self.socket.display().to_string(),
            status: status.as_u16(),
            message: body["error"]
                .as_str()
                .unwrap_or("no reason given")
                .to_string(),
        })
    }

    fn send(&self, request: reqwest::blocking::RequestBuilder) -> Result<Value, ClientError> {
        let response = request.send().map_err(|e| self.http_error(e))?;
        let response = self.answer(response)?;
        if response.status() == reqwest::StatusCode::NO_CONTENT {
            return Ok(Value::Null);
        }
        response.json().map_err(|e| self.http_error(e))
    }

    /// `GET /api/v1/people`.
    pub fn people(&self) -> Result<Value, ClientError> {
        self.send(self.authed(self.http.get(self.url("/api/v1/people"))))
    }

    /// `POST /api/v1/people` with the photos' files as they are on disk.
    pub fn enroll(&self, name: &str, photos: &[PathBuf]) -> Result<Value, ClientError> {
        let form = photo_form(photos, Some(name))?;
        self.send(self.authed(self.http.post(self.url("/api/v1/people")).multipart(form)))
    }

    /// `POST /api/v1/people/{who}/photos`: more templates for an enrolled person.
    pub fn add_photos(&self, who: &str, photos: &[PathBuf]) -> Result<Value, ClientError> {
        let url = self.url(&format!("/api/v1/people/{}/photos", path_segment(who)));
        self.send(self.authed(self.http.post(url).multipart(photo_form(photos, None)?)))
    }

    /// `DELETE /api/v1/people/{who}`.
    pub fn remove(&self, who: &str) -> Result<Value, ClientError> {
        let url = self.url(&format!("/api/v1/people/{}", path_segment(who)));
        self.send(self.authed(self.http.delete(url)))
    }

    /// `PATCH /api/v1/people/{who}` with a new name.
    pub fn rename(&self, who: &str, new_name: &str) -> Result<Value, ClientError> {
        let url = self.url(&format!("/api/v1/people/{}", path_segment(who)));
        self.send(self.authed(self.http.patch(url).json(&json!({ "name": new_name }))))
    }

    /// `POST /api/v1/people/{who}/enroll-live`: `on_event(kind, data)` for each event the
    /// service streams, until it ends; returns the last one.
    pub fn enroll_live(
        &self,
        who: &str,
        create: bool,
        frames: Option<usize>,
        mut on_event: impl FnMut(&str, &Value),
    ) -> Result<(String, Value), ClientError> {
        let url = self.url(&format!("/api/v1/people/{}/enroll-live", path_segment(who)));
        let mut body = json!({ "create": create });
        if let Some(k) = frames {
            body["frames"] = json!(k);
        }
        // A capture waits on the person in front of the camera: no overall timeout.
        let request = self
            .authed(self.http.post(url).json(&body))
            .timeout(Duration::from_secs(3600));
        let response = request.send().map_err(|e| self.http_error(e))?;
        let response = self.answer(response)?;
        let mut last = (String::new(), Value::Null);
        let mut kind = String::new();
        for line in BufReader::new(response).lines() {
            let line = line.map_err(|source| ClientError::Stream {
                socket: self.socket.display().to_string(),
                source,
            })?;
            if let Some(k) = line.strip_prefix("event:") {
                kind = k.trim().to_string();
            } else if let Some(d) = line.strip_prefix("data:") {
                let data: Value = serde_json::from_str(d.trim()).unwrap_or(Value::Null);
                on_event(&kind, &data);
                last = (kind.clone(), data);
            }
        }
        Ok(last)
    }
}

/// A multipart form of the photos' files (as they are on disk) and, for a new person, the name.
fn photo_form(photos: &[PathBuf], name: Option<&str>) -> Result<multipart::Form, ClientError> {
    let mut form = multipart::Form::new();
    if let Some(name) = name {
        form = form.text("name", name.to_string());
    }
    for p in photos {
        let part = multipart::Part::file(p).map_err(|source| ClientError::Photo {
            path: p.display().to_string(),
            source,
        })?;
        form = form.part("photo", part);
    }
    Ok(form)
}

/// `who` as one URL path segment (names have spaces).
fn path_segment(who: &str) -> String {
    percent_encoding::utf8_percent_encode(who, percent_encoding::NON_ALPHANUMERIC).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_become_one_path_segment() {
        assert_eq!(path_segment("Ada Lovelace"), "Ada%20Lovelace");
        assert_eq!(path_segment("a/b?c"), "a%2Fb%3Fc");
        assert_eq!(path_segment("0123abcd"), "0123abcd");
        assert_eq!(path_segment("Zoë"), "Zo%C3%AB");
    }
}
