//! Graph request paths: `/{vN.M}?/{node}[/{edge}]`, with an optional trailing slash.
//!
//! SDKs disagree on the version (v14.0 … v26.0, or none at all) and pywa POSTs to
//! `/{phone_id}/`, so all of those must route to the same handler; the version is kept only
//! for logs and never changes behaviour.

/// A parsed Graph path. Holding one means every segment is well formed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct GraphPath {
    /// `v23.0`, as given, when the path had one.
    pub(crate) version: Option<String>,
    /// The object addressed: a phone number id, WABA id, media id, template id, app id.
    pub(crate) node: String,
    /// What of the node: `messages`, `media`, `message_templates`, ...
    pub(crate) edge: Option<String>,
}

impl GraphPath {
    /// Parses the path part of a request URI (no query). `None` for anything that is not a
    /// Graph path: empty segments (`//`), a version with no node, more than node and edge.
    pub(crate) fn parse(path: &str) -> Option<Self> {
        let rest = path.strip_prefix('/')?;
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        let mut segments: Vec<&str> = rest.split('/').collect();
        let version = match segments.first() {
            Some(first) if is_version(first) => Some(segments.remove(0).to_owned()),
            _ => None,
        };
        if !segments.iter().all(|s| is_segment(s)) {
            return None;
        }
        match segments.as_slice() {
            [node] => Some(Self {
                version,
                node: (*node).to_owned(),
                edge: None,
            }),
            [node, edge] => Some(Self {
                version,
                node: (*node).to_owned(),
                edge: Some((*edge).to_owned()),
            }),
            _ => None,
        }
    }
}

/// `v` + digits + `.` + digits, as in `v23.0`.
fn is_version(segment: &str) -> bool {
    let Some((major, minor)) = segment.strip_prefix('v').and_then(|s| s.split_once('.')) else {
        return false;
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    digits(major) && digits(minor)
}

/// A node or edge: non-empty `[A-Za-z0-9_.-]`.
fn is_segment(segment: &str) -> bool {
    !segment.is_empty()
        && segment
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn path(version: Option<&str>, node: &str, edge: Option<&str>) -> Option<GraphPath> {
        Some(GraphPath {
            version: version.map(str::to_owned),
            node: node.to_owned(),
            edge: edge.map(str::to_owned),
        })
    }

    #[test]
    fn a_versioned_path_with_an_edge_parses() {
        assert_eq!(
            GraphPath::parse("/v23.0/123/messages"),
            path(Some("v23.0"), "123", Some("messages"))
        );
    }

    #[test]
    fn an_unversioned_path_with_a_trailing_slash_parses() {
        assert_eq!(
            GraphPath::parse("/123/messages/"),
            path(None, "123", Some("messages"))
        );
        assert_eq!(GraphPath::parse("/123/"), path(None, "123", None));
    }

    #[test]
    fn a_node_alone_parses_with_or_without_a_version() {
        assert_eq!(
            GraphPath::parse("/v17.0/123"),
            path(Some("v17.0"), "123", None)
        );
        assert_eq!(GraphPath::parse("/123"), path(None, "123", None));
    }

    #[test]
    fn a_version_without_a_node_is_not_a_graph_path() {
        assert_eq!(GraphPath::parse("/v1.0/"), None);
        assert_eq!(GraphPath::parse("/v1.0"), None);
    }

    #[test]
    fn more_than_node_and_edge_is_not_a_graph_path() {
        assert_eq!(GraphPath::parse("/a/b/c/d"), None);
        assert_eq!(GraphPath::parse("/v23.0/a/b/c"), None);
    }

    #[test]
    fn empty_segments_and_odd_characters_are_refused() {
        for bad in [
            "",
            "/",
            "//",
            "/123//messages",
            "//123",
            "/123//",
            "123/messages",
            "/12 3",
            "/a/%2e",
        ] {
            assert_eq!(GraphPath::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn only_v_digits_dot_digits_is_a_version() {
        // `v23` is not a version, so it is the node here.
        assert_eq!(
            GraphPath::parse("/v23/messages"),
            path(None, "v23", Some("messages"))
        );
        assert_eq!(GraphPath::parse("/v.0/x"), path(None, "v.0", Some("x")));
    }
}
