//! The one place in the gateway that calls C directly: `gss_acquire_cred_from` (MIT's
//! credential-store extension, `gssapi_ext.h`), which the safe `libgssapi` API lacks.
//!
//! It acquires an ACCEPTOR credential for a host-based service name (`HTTP@host`,
//! `GSS_C_NT_HOSTBASED_SERVICE`) from one explicit keytab (cred store `{"keytab": PATH}`),
//! so the gateway never depends on `KRB5_KTNAME` or the library's default keytab at run
//! time, and the result is handed to `libgssapi` as a [`Cred`] it owns from then on.
//! Everything else (accepting contexts, names, error texts) goes through `libgssapi`.
//!
//! The module is `#[allow(unsafe_code)]` (the crate denies it elsewhere); each `unsafe`
//! block states why it is sound.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt as _;
use std::path::Path;
use std::ptr;

use libgssapi::credential::Cred;
use libgssapi::error::{Error as GssError, MajorFlags};
use libgssapi_sys::{
    gss_OID_set_desc, gss_acquire_cred_from, gss_buffer_desc, gss_cred_id_t, gss_cred_usage_t,
    gss_import_name, gss_key_value_element_desc, gss_key_value_set_desc, gss_name_t,
    gss_release_name, OM_uint32, _GSS_C_INDEFINITE, GSS_C_ACCEPT, GSS_C_NT_HOSTBASED_SERVICE,
};

/// The calling-error and routine-error bits of a major status (RFC 2744 §3.9.1): any of
/// them set means the call failed; the low 16 bits are only supplementary information.
const GSS_ERROR_MASK: OM_uint32 = 0xffff_0000;

/// Why an acceptor credential could not be acquired.
#[derive(Debug)]
pub enum AcquireError {
    /// The service name or the keytab path contains a NUL byte (cannot be passed to C).
    Nul,
    /// GSS-API refused; `Display` of the error gives MIT's major and minor messages.
    Gss(GssError),
}

fn gss_err(major: OM_uint32, minor: OM_uint32) -> GssError {
    GssError {
        major: MajorFlags::from_bits_retain(major),
        minor,
    }
}

/// Acquire an acceptor credential for `service_at_host` (`HTTP@gw.example.org`) from the
/// keytab file at `keytab`. MIT checks that the keytab holds a key for that service
/// principal; its error says which one it looked for.
pub fn acquire_acceptor(service_at_host: &str, keytab: &Path) -> Result<Cred, AcquireError> {
    let name_text = CString::new(service_at_host).map_err(|_| AcquireError::Nul)?;
    let path = CString::new(keytab.as_os_str().as_bytes()).map_err(|_| AcquireError::Nul)?;
    let mut minor: OM_uint32 = 0;
    let mut name: gss_name_t = ptr::null_mut();
    let mut name_buf = gss_buffer_desc {
        length: name_text.as_bytes().len(),
        value: name_text.as_ptr() as *mut _,
    };
    // SAFETY: `name_buf` points at `name_text`, alive for the whole call; gss_import_name
    // only reads it. `GSS_C_NT_HOSTBASED_SERVICE` is a constant OID the library exports and
    // never writes after load. On success `name` is a fresh name we release below.
    let major = unsafe {
        gss_import_name(
            &mut minor,
            &mut name_buf,
            GSS_C_NT_HOSTBASED_SERVICE,
            &mut name,
        )
    };
    if major & GSS_ERROR_MASK != 0 {
        return Err(AcquireError::Gss(gss_err(major, minor)));
    }
    let key = c"keytab";
    let mut element = gss_key_value_element_desc {
        key: key.as_ptr(),
        value: path.as_ptr(),
    };
    let store = gss_key_value_set_desc {
        count: 1,
        elements: &mut element,
    };
    let mut cred: gss_cred_id_t = ptr::null_mut();
    // SAFETY: `name` is the valid name imported above; `store` and the element and
    // strings it points at live until after the call, which only reads them. No mechanism
    // set is requested (GSS_C_NO_OID_SET = null: every mechanism, so SPNEGO and raw krb5)
    // and none is returned (null out-pointers are allowed). On success `cred` is a fresh
    // credential whose sole ownership passes to `Cred::from_c`.
    let major = unsafe {
        gss_acquire_cred_from(
            &mut minor,
            name,
            _GSS_C_INDEFINITE,
            ptr::null_mut::<gss_OID_set_desc>(),
            GSS_C_ACCEPT as gss_cred_usage_t,
            &store,
            &mut cred,
            ptr::null_mut(),
            ptr::null_mut(),
        )
    };
    let mut release_minor: OM_uint32 = 0;
    // SAFETY: `name` came from gss_import_name above and is released exactly once.
    unsafe { gss_release_name(&mut release_minor, &mut name) };
    if major & GSS_ERROR_MASK != 0 {
        return Err(AcquireError::Gss(gss_err(major, minor)));
    }
    // SAFETY: `cred` was just created for us and nothing else holds it.
    Ok(unsafe { Cred::from_c(cred) })
}
