//! Scalar functions KFL needs and DataFusion lacks. They travel inside the compiled
//! expression, so no session has to register them.

use std::sync::Arc;

use datafusion::{
    arrow::{
        array::{Array, AsArray, Int64Builder},
        compute::{cast as cast_array, kernels::length::length},
        datatypes::DataType,
    },
    common::{ScalarValue, exec_err},
    logical_expr::{ColumnarValue, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility},
};

/// `kfl_count_matches(list<string>, pattern)`: how many elements the regex matches.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct CountMatches {
    signature: Signature,
}

impl Default for CountMatches {
    fn default() -> Self {
        Self {
            signature: Signature::any(2, Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for CountMatches {
    fn name(&self) -> &str {
        "kfl_count_matches"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> datafusion::common::Result<DataType> {
        Ok(DataType::Int64)
    }

    fn invoke_with_args(
        &self,
        args: ScalarFunctionArgs,
    ) -> datafusion::common::Result<ColumnarValue> {
        let [list, pattern] = args.args.as_slice() else {
            return exec_err!("kfl_count_matches takes a list and a pattern");
        };
        let pattern = match pattern {
            ColumnarValue::Scalar(
                ScalarValue::Utf8(Some(p))
                | ScalarValue::Utf8View(Some(p))
                | ScalarValue::LargeUtf8(Some(p)),
            ) => p,
            _ => return exec_err!("kfl_count_matches needs a literal pattern"),
        };
        let re = match regex::Regex::new(pattern) {
            Ok(re) => re,
            Err(e) => return exec_err!("invalid pattern {pattern}: {e}"),
        };
        let list = list.clone().into_array(args.number_rows)?;
        let mut out = Int64Builder::with_capacity(list.len());
        let Some(list) = list.as_list_opt::<i32>() else {
            return exec_err!("kfl_count_matches needs a list, got {}", list.data_type());
        };
        let values = cast_array(list.values(), &DataType::Utf8)?;
        let values = values.as_string::<i32>();
        let offsets = list.value_offsets();
        for i in 0..list.len() {
            if list.is_null(i) {
                out.append_value(0);
                continue;
            }
            let (start, end) = (offsets[i] as usize, offsets[i + 1] as usize);
            let n = (start..end)
                .filter(|&j| values.is_valid(j) && re.is_match(values.value(j)))
                .count();
            out.append_value(n as i64);
        }
        Ok(ColumnarValue::Array(Arc::new(out.finish())))
    }
}

/// `kfl_byte_length(bytes)`: the length of a binary value (DataFusion's `octet_length` takes
/// strings only), for `size(request_body)`.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct ByteLength {
    signature: Signature,
}

impl Default for ByteLength {
    fn default() -> Self {
        Self {
            signature: Signature::any(1, Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for ByteLength {
    fn name(&self) -> &str {
        "kfl_byte_length"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> datafusion::common::Result<DataType> {
        Ok(DataType::Int64)
    }

    fn invoke_with_args(
        &self,
        args: ScalarFunctionArgs,
    ) -> datafusion::common::Result<ColumnarValue> {
        let [value] = args.args.as_slice() else {
            return exec_err!("kfl_byte_length takes one argument");
        };
        let array = value.clone().into_array(args.number_rows)?;
        let lengths = length(&array)?;
        Ok(ColumnarValue::Array(cast_array(
            &lengths,
            &DataType::Int64,
        )?))
    }
}
