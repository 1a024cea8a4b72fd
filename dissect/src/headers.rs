//! Header fields of one message, kept in one buffer.
//!
//! A message has a dozen fields; holding each name and value in its own `String` cost two
//! allocations per field, two frees when the row was written, and a pointer chase per field in
//! between: the allocator was the largest single cost of HTTP/1 parsing. [`Headers`] appends
//! every field to one text buffer and keeps where each one ends (docs/dissection.md has the
//! measurements).

use std::fmt;

/// Header fields in order, names and values as sent (invalid UTF-8 replaced).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Headers {
    /// Every name and value, back to back.
    text: String,
    /// Per field: where its name ends and where its value ends in `text` (the name starts
    /// where the previous value ended).
    ends: Vec<(u32, u32)>,
}

impl Headers {
    /// No fields.
    pub const fn new() -> Self {
        Self {
            text: String::new(),
            ends: Vec::new(),
        }
    }

    /// Room for `fields` fields of `bytes` bytes of names and values in all.
    pub fn with_capacity(fields: usize, bytes: usize) -> Self {
        Self {
            text: String::with_capacity(bytes),
            ends: Vec::with_capacity(fields),
        }
    }

    /// Appends a field. A message's fields are bounded far below 4 GiB by every parser that
    /// makes them; a field past that is dropped rather than stored with wrapped offsets.
    pub fn push(&mut self, name: &str, value: &str) {
        let name_end = self.text.len() + name.len();
        let value_end = name_end + value.len();
        let (Ok(name_end), Ok(value_end)) = (u32::try_from(name_end), u32::try_from(value_end))
        else {
            return;
        };
        self.text.push_str(name);
        self.text.push_str(value);
        self.ends.push((name_end, value_end));
    }

    /// Number of fields.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// No fields.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Bytes of all names and values.
    pub fn text_len(&self) -> usize {
        self.text.len()
    }

    /// The fields in order.
    pub fn iter(&self) -> Iter<'_> {
        Iter {
            text: &self.text,
            ends: self.ends.iter(),
            start: 0,
        }
    }

    /// The first value of a field, by name in any case.
    pub fn get(&self, name: &str) -> Option<&str> {
        // Over bytes, and a name's bytes only when its length matches: this runs several
        // times per message, and slicing `str`s checked every field's char boundaries (3% of
        // a dissection).
        let text = self.text.as_bytes();
        let wanted = name.as_bytes();
        let mut start = 0;
        for &(name_end, value_end) in &self.ends {
            let (name_end, value_end) = (name_end as usize, value_end as usize);
            if name_end.saturating_sub(start) == wanted.len()
                && text
                    .get(start..name_end)
                    .is_some_and(|n| n.eq_ignore_ascii_case(wanted))
            {
                return self.text.get(name_end..value_end);
            }
            start = value_end;
        }
        None
    }

    /// Every field back to back, and per field where its name ends and where its value ends
    /// in that text (the name starts where the previous value ended, the first at 0): for
    /// writers that copy fields in bulk rather than one by one. Every end is a character
    /// boundary.
    pub fn as_parts(&self) -> (&str, &[(u32, u32)]) {
        (&self.text, &self.ends)
    }

    /// Bytes held, about: the text, and per field its offsets and the 32 bytes of overhead
    /// HPACK counts per field.
    pub fn held(&self) -> usize {
        self.text.len() + self.ends.len() * 32
    }
}

/// The fields of a [`Headers`], in order.
#[derive(Clone)]
pub struct Iter<'a> {
    text: &'a str,
    ends: std::slice::Iter<'a, (u32, u32)>,
    start: usize,
}

impl<'a> Iterator for Iter<'a> {
    type Item = (&'a str, &'a str);

    fn next(&mut self) -> Option<Self::Item> {
        let &(name_end, value_end) = self.ends.next()?;
        let (name_end, value_end) = (name_end as usize, value_end as usize);
        let name = self.text.get(self.start..name_end).unwrap_or_default();
        let value = self.text.get(name_end..value_end).unwrap_or_default();
        self.start = value_end;
        Some((name, value))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.ends.size_hint()
    }
}

impl ExactSizeIterator for Iter<'_> {}

impl<'a> IntoIterator for &'a Headers {
    type Item = (&'a str, &'a str);
    type IntoIter = Iter<'a>;

    fn into_iter(self) -> Iter<'a> {
        self.iter()
    }
}

impl<N: AsRef<str>, V: AsRef<str>> FromIterator<(N, V)> for Headers {
    fn from_iter<I: IntoIterator<Item = (N, V)>>(iter: I) -> Self {
        let mut headers = Headers::new();
        headers.extend(iter);
        headers
    }
}

impl<N: AsRef<str>, V: AsRef<str>> Extend<(N, V)> for Headers {
    fn extend<I: IntoIterator<Item = (N, V)>>(&mut self, iter: I) {
        for (name, value) in iter {
            self.push(name.as_ref(), value.as_ref());
        }
    }
}

impl fmt::Debug for Headers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_come_back_in_order_with_empty_names_and_values() {
        let fields = [
            ("Host", "a.example"),
            ("", "no name"),
            ("x-empty", ""),
            ("Host", "second"),
            ("ünï", "cødé"),
        ];
        let headers: Headers = fields.iter().copied().collect();
        assert_eq!(headers.len(), fields.len());
        let (text, ends) = headers.as_parts();
        assert_eq!(text.len(), headers.text_len());
        assert_eq!(ends.len(), fields.len());
        let mut start = 0;
        for (&(name_end, value_end), (name, value)) in ends.iter().zip(fields) {
            assert_eq!(&text[start..name_end as usize], name);
            assert_eq!(&text[name_end as usize..value_end as usize], value);
            start = value_end as usize;
        }
        assert_eq!(headers.iter().collect::<Vec<_>>(), fields);
        assert_eq!(headers.get("host"), Some("a.example"), "first, any case");
        assert_eq!(headers.get("X-EMPTY"), Some(""));
        assert_eq!(headers.get("missing"), None);
        assert_eq!(headers.get(""), Some("no name"));
        assert_eq!(headers.get("ünï"), Some("cødé"));
        assert_eq!(headers.get("ÜNÏ"), None, "ASCII case only, as HTTP says");
        assert_eq!(headers.get("hos"), None, "a prefix is not the name");
        assert_eq!(format!("{headers:?}").matches("Host").count(), 2);
    }

    #[test]
    fn extend_appends_after_the_existing_fields() {
        let mut headers: Headers = [(":status", "200")].into_iter().collect();
        let trailers: Headers = [("grpc-status", "0")].into_iter().collect();
        headers.extend(&trailers);
        assert_eq!(
            headers.iter().collect::<Vec<_>>(),
            [(":status", "200"), ("grpc-status", "0")]
        );
        assert_eq!(Headers::new(), Headers::default());
        assert!(Headers::new().is_empty());
    }
}
