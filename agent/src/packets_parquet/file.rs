//! Row groups to a file: pages laid out column chunk by column chunk, then the page index and
//! the footer. This is the part of writing that does I/O; it runs in the writer thread.

use std::io::{self, Write};

use super::{
    CREATED_BY, arrow_schema_metadata, col,
    encoder::EncodedRowGroup,
    format::{
        COLUMNS, PageHeader, RowGroupMeta, Stats, encoding as enc, write_column_index,
        write_file_metadata, write_offset_index,
    },
};

/// One packets file being written to `out`.
pub struct PacketsFile<W: Write> {
    out: W,
    written: u64,
    node: Vec<u8>,
    row_groups: Vec<RowGroupMeta>,
    rows: u64,
    header: Vec<u8>,
    /// Key-value metadata for the footer, besides the Arrow schema.
    metadata: Vec<(String, String)>,
}

impl<W: Write> PacketsFile<W> {
    /// Sets a key-value pair of the footer's metadata (replacing one with the same key).
    pub fn set_metadata(&mut self, key: &str, value: String) {
        self.metadata.retain(|(k, _)| k != key);
        self.metadata.push((key.to_owned(), value));
    }

    /// Starts a file of rows of node `node`.
    pub fn new(mut out: W, node: &str) -> io::Result<Self> {
        out.write_all(b"PAR1")?;
        Ok(Self {
            out,
            written: 4,
            node: node.as_bytes().to_vec(),
            row_groups: Vec::new(),
            rows: 0,
            header: Vec::new(),
            metadata: Vec::new(),
        })
    }

    /// Rows written so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Bytes written so far.
    pub fn bytes_written(&self) -> u64 {
        self.written
    }

    fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.out.write_all(bytes)?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    fn write_dictionary(&mut self, entries: u32, plain: &[u8]) -> io::Result<usize> {
        let mut header = std::mem::take(&mut self.header);
        header.clear();
        PageHeader {
            uncompressed: plain.len(),
            compressed: plain.len(),
            num_values: entries as usize,
            encoding: enc::PLAIN,
            dictionary: true,
        }
        .write(&mut header);
        let result = self.write(&header).and_then(|()| self.write(plain));
        let size = header.len() + plain.len();
        self.header = header;
        result.map(|()| size)
    }

    /// Appends a row group: each column's dictionary page (if it has one), then its data pages.
    pub fn write_row_group(&mut self, group: &EncodedRowGroup) -> io::Result<()> {
        if group.rows() == 0 {
            return Ok(());
        }
        let offset = self.written;
        let mut metas = Vec::with_capacity(COLUMNS.len());
        for (c, chunk) in group.chunks.iter().enumerate() {
            let start = self.written;
            let (dictionary, stats) = match c {
                col::NODE => {
                    let mut plain = (self.node.len() as u32).to_le_bytes().to_vec();
                    plain.extend_from_slice(&self.node);
                    let size = self.write_dictionary(1, &plain)?;
                    let stats = Stats {
                        min: Some(self.node.clone()),
                        max: Some(self.node.clone()),
                        nulls: 0,
                    };
                    (Some((size, size)), Some(stats))
                }
                col::SRC_IP | col::DST_IP => {
                    let i = usize::from(c == col::DST_IP);
                    let size =
                        self.write_dictionary(group.dictionary_entries[i], &group.dictionaries[i])?;
                    (Some((size, size)), Some(group.dictionary_stats[i].clone()))
                }
                col::PAYLOAD => (None, None),
                _ => (None, Some(chunk.stats())),
            };
            self.write(&chunk.bytes)?;
            for part in &chunk.parts {
                self.write(part)?;
            }
            metas.push(chunk.meta(start, dictionary, stats));
        }
        self.row_groups.push(RowGroupMeta {
            chunks: metas,
            rows: group.rows(),
            offset,
            sorted: group.is_sorted(),
        });
        self.rows += group.rows();
        Ok(())
    }

    /// Writes the page index and the footer; returns the file size and the underlying writer.
    pub fn finish(mut self) -> io::Result<(u64, W)> {
        // The page index of every row group, in one write: column indexes, then offset indexes.
        let mut index = Vec::new();
        let mut row_groups = std::mem::take(&mut self.row_groups);
        for group in &mut row_groups {
            for chunk in &mut group.chunks {
                if let Some(pages) = &chunk.page_stats {
                    let at = index.len();
                    write_column_index(&mut index, pages, ascending_i64(pages));
                    chunk.column_index =
                        Some((self.written + at as u64, (index.len() - at) as u32));
                }
            }
        }
        for group in &mut row_groups {
            for chunk in &mut group.chunks {
                let at = index.len();
                write_offset_index(&mut index, &chunk.pages);
                chunk.offset_index = Some((self.written + at as u64, (index.len() - at) as u32));
            }
        }
        self.write(&index)?;
        let mut footer = Vec::new();
        let schema = arrow_schema_metadata();
        let mut key_values: Vec<(&str, &str)> = vec![("ARROW:schema", schema)];
        key_values.extend(self.metadata.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        write_file_metadata(&mut footer, &row_groups, &key_values, CREATED_BY);
        let footer_len = footer.len() as u32;
        footer.extend_from_slice(&footer_len.to_le_bytes());
        footer.extend_from_slice(b"PAR1");
        self.write(&footer)?;
        self.out.flush()?;
        Ok((self.written, self.out))
    }
}

/// True when every page's min and max are at least the previous page's (timestamps).
fn ascending_i64(pages: &[(Vec<u8>, Vec<u8>)]) -> bool {
    let key = |b: &[u8]| i64::from_le_bytes(b.try_into().unwrap_or([0; 8]));
    pages
        .windows(2)
        .all(|w| key(&w[0].0) <= key(&w[1].0) && key(&w[0].1) <= key(&w[1].1))
}
