//! The CRL reader against lists from `openssl ca -gencrl` and hostile versions of
//! them: every failure is an `Unusable` answer, never a panic and never "not revoked".

use directmail_smime::crl::{Crl, Status};

use crate::pki::pki;

/// Now, in Unix seconds.
fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[test]
fn the_intermediates_list_names_the_revoked_certificate_and_no_other() {
    let p = pki();
    let crl = Crl::from_der(&p.crl_der).unwrap();
    let inter = p.inter.certificate();
    assert!(matches!(
        crl.status(&p.revoked.certificate(), &inter, now()),
        Ok(Status::Revoked { .. })
    ));
    assert_eq!(
        crl.status(&p.sender.certificate(), &inter, now()),
        Ok(Status::Good)
    );
    // a certificate of another issuer is not answered for by this list
    let why = crl
        .status(&p.stranger.certificate(), &inter, now())
        .unwrap_err();
    assert!(why.0.contains("not by the certificate's issuer"), "{why}");
}

#[test]
fn a_list_past_its_next_update_is_unusable() {
    let p = pki();
    let crl = Crl::from_der(&p.crl_der).unwrap();
    let later = crl.next_update().unwrap() + 1;
    let why = crl
        .status(&p.sender.certificate(), &p.inter.certificate(), later)
        .unwrap_err();
    assert!(why.0.contains("out of date"), "{why}");
}

#[test]
fn a_damaged_signature_is_unusable_not_good() {
    let p = pki();
    let mut der = p.crl_der.clone();
    let last = der.len() - 1;
    der[last] ^= 0x01;
    let crl = Crl::from_der(&der).unwrap();
    let why = crl
        .status(&p.sender.certificate(), &p.inter.certificate(), now())
        .unwrap_err();
    assert!(
        why.0.contains("not signed by the certificate's issuer"),
        "{why}"
    );
    // nor is the root's key taken for the intermediate's
    let crl = Crl::from_der(&p.crl_der).unwrap();
    assert!(
        crl.status(&p.sender.certificate(), &p.root.certificate(), now())
            .is_err()
    );
}

#[test]
fn truncated_padded_and_lying_lists_are_refused_without_panicking() {
    let p = pki();
    let der = &p.crl_der;
    for cut in 0..der.len() {
        assert!(Crl::from_der(&der[..cut]).is_err(), "cut at {cut}");
    }
    let mut padded = der.clone();
    padded.extend_from_slice(&[0, 0]);
    assert!(Crl::from_der(&padded).is_err());
    // an outer SEQUENCE that claims four gigabytes
    let mut lying = vec![0x30, 0x84, 0xff, 0xff, 0xff, 0xff];
    lying.extend_from_slice(&der[4..]);
    assert!(Crl::from_der(&lying).is_err());
    // a version other than v2 (INTEGER 1) in the TBSCertList
    let mut v3 = der.clone();
    let at = v3
        .windows(3)
        .position(|w| w == [0x02, 0x01, 0x01])
        .expect("the list carries version 2");
    v3[at + 2] = 0x02;
    let why = Crl::from_der(&v3).unwrap_err();
    assert!(why.0.contains("could not be read"), "{why}");
}
