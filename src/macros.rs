//! Item shapes the crate writes many times, written once: builder setters
//! that store their argument, and `From` conversions that wrap a value in
//! an enum variant. Each use site still names every method or conversion,
//! its argument and what it does.

/// Builder setters: each `$name($arg: $ty) => $field = $value;` becomes
/// `pub fn $name(mut self, $arg: $ty) -> Self` setting `self.$field` to
/// `$value` and returning the builder; doc comments go with their setter.
///
/// ```text
/// impl Builder {
///     setters! {
///         /// At most `n` items.
///         limit(n: usize) => limit = Some(n);
///     }
/// }
/// ```
macro_rules! setters {
    ($($(#[$doc:meta])* $name:ident($arg:ident: $ty:ty) => $field:ident = $value:expr;)+) => {
        $(
            $(#[$doc])*
            pub fn $name(mut self, $arg: $ty) -> Self {
                self.$field = $value;
                self
            }
        )+
    };
}

/// `impl From<$ty> for $enum`, wrapping the value in `$enum::$variant`,
/// for each `$ty => $variant`.
macro_rules! from_variants {
    ($enum:ident { $($ty:ty => $variant:ident),+ $(,)? }) => {
        $(
            impl From<$ty> for $enum {
                fn from(v: $ty) -> Self {
                    $enum::$variant(v)
                }
            }
        )+
    };
}

pub(crate) use {from_variants, setters};
