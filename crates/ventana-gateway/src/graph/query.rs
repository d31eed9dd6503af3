//! Query strings as Graph reads them: `application/x-www-form-urlencoded` pairs, decoded on
//! demand. The raw text is kept too, so a paging link can repeat a request with only its
//! cursor changed, byte for byte otherwise.

/// A request's query string.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Query<'a> {
    raw: &'a str,
}

impl<'a> Query<'a> {
    pub(crate) fn new(raw: Option<&'a str>) -> Self {
        Self {
            raw: raw.unwrap_or_default(),
        }
    }

    /// Every value given for `key`, decoded, in order. `key` alone counts as `key=`; a pair
    /// whose key or value is not UTF-8 once decoded is skipped.
    pub(crate) fn values(&self, key: &'a str) -> impl Iterator<Item = String> + 'a {
        self.pairs()
            .filter_map(|pair| {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                Some((form_decode(k)?, v))
            })
            .filter(move |(k, _)| k == key)
            .filter_map(|(_, v)| form_decode(v))
    }

    /// The first value given for `key`, decoded.
    pub(crate) fn get(&self, key: &'a str) -> Option<String> {
        self.values(key).next()
    }

    /// The query as given, less the pairs whose (decoded) key is in `keys`, still encoded.
    pub(crate) fn raw_without(&self, keys: &[&str]) -> Vec<&'a str> {
        self.pairs()
            .filter(|pair| {
                let key = pair.split_once('=').map_or(*pair, |(k, _)| k);
                !form_decode(key).is_some_and(|k| keys.contains(&k.as_str()))
            })
            .collect()
    }

    fn pairs(&self) -> impl Iterator<Item = &'a str> + 'a {
        self.raw.split('&').filter(|pair| !pair.is_empty())
    }
}

/// `application/x-www-form-urlencoded` decoding: `+` is a space, `%XX` a byte. `None` if the
/// result is not UTF-8. A `%` not followed by two hex digits stays as it is, like browsers do.
pub(crate) fn form_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let digit = |at: usize| bytes.get(at).copied().and_then(hex_value);
                match (digit(i + 1), digit(i + 2)) {
                    (Some(high), Some(low)) => {
                        out.push(high << 4 | low);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            other => out.push(other),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

fn hex_value(digit: u8) -> Option<u8> {
    char::from(digit)
        .to_digit(16)
        .and_then(|v| u8::try_from(v).ok())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn values_are_form_decoded_and_the_first_wins() {
        let query = Query::new(Some(
            "name=order%5Fupdate&status=APPROVED&name=other&fields",
        ));
        assert_eq!(query.get("name").as_deref(), Some("order_update"));
        assert_eq!(query.values("name").count(), 2);
        assert_eq!(query.get("fields").as_deref(), Some(""));
        assert_eq!(query.get("limit"), None);
        assert_eq!(Query::new(None).get("name"), None);
    }

    #[test]
    fn undecodable_pairs_are_skipped() {
        let query = Query::new(Some("name=%FF&name=ok&%FF=x"));
        assert_eq!(query.get("name").as_deref(), Some("ok"));
    }

    #[test]
    fn raw_without_keeps_the_other_pairs_exactly_as_given() {
        let query = Query::new(Some(
            "limit=2&after=MTI&access_token=a%2Fb&%61fter=x&&fields=id",
        ));
        assert_eq!(
            query.raw_without(&["after", "before"]),
            vec!["limit=2", "access_token=a%2Fb", "fields=id"]
        );
    }

    #[test]
    fn a_stray_percent_is_kept_as_it_is() {
        assert_eq!(form_decode("a%2").as_deref(), Some("a%2"));
        assert_eq!(form_decode("100%").as_deref(), Some("100%"));
        assert_eq!(form_decode("%zz").as_deref(), Some("%zz"));
        assert_eq!(form_decode("a+b%20c").as_deref(), Some("a b c"));
    }
}
