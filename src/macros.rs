//! The crate's internal macros.

/// Builder-style setters, declared once each: `setters!(Type { /// doc
/// field(value: T); /// doc other(v: impl Into<String>) => Some(v.into()); })`
/// makes `#[must_use] pub fn field(mut self, value: T) -> Self` that stores
/// the value (or the expression after `=>`) in the field of that name.
macro_rules! setters {
    ($ty:ident { $(
        $(#[$attr:meta])*
        $field:ident($v:ident: $arg:ty) $(=> $conv:expr)?;
    )+ }) => {
        impl $ty {
            $(
                $(#[$attr])*
                #[must_use]
                pub fn $field(mut self, $v: $arg) -> Self {
                    self.$field = $crate::macros::setters!(@value $v $(, $conv)?);
                    self
                }
            )+
        }
    };
    (@value $v:ident) => {
        $v
    };
    (@value $v:ident, $conv:expr) => {
        $conv
    };
}
pub(crate) use setters;
