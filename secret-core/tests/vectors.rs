//! Every vector of `tests/VECTORS.md` (a copy of the project's `protocol/vectors.md`).

use secret_core::crypto::{
    AuthKey, DecryptError, KeyFingerprint, aes_ige_decrypt, aes_ige_encrypt, decrypt_e2e,
    decrypt_message, decrypt_packet, encrypt_packet, kdf, msg_key, sha1, sha256,
};
use secret_core::dh::{DhConfig, DhConfigCache, DhError, TELEGRAM_DH_PRIME, bench_support};

fn h(s: &str) -> Vec<u8> {
    let clean: String = s.split_whitespace().collect();
    hex::decode(clean).expect("valid hex in test vector")
}

fn h32(s: &str) -> [u8; 32] {
    h(s).try_into().expect("32 bytes")
}

fn h16(s: &str) -> [u8; 16] {
    h(s).try_into().expect("16 bytes")
}

fn key(s: &str) -> AuthKey {
    AuthKey::from_bytes(&h(s)).expect("256-byte key")
}

// ---------------------------------------------------------------------------------------------
// A. TDLib push packets (end-to-end format, decrypted with x = 8)
// ---------------------------------------------------------------------------------------------

const A_KEY: &str = "
b816b9caed356be9c925eaac477c9ea8cb3a7c92d85e379c63315cbd2ea32304
b79de7c122bf792d6ad39be21b4413432eb9084b3d52bf4298a43ce153c58546
4d43d15feac8eed7b1b0cfcab631441a46c687c95083528dbd6e0b1a12768875
fc5d145c40367d658a295c4bd0329442cb197db563dc06d1825b16a47fa30cad
6873a781c9d4624b78b88fe1f4c8990432829181a17d35a608e2edbaa0843e13
3e3a913554f91ededda71da1f3892a6ec720a6a7ff964c83cd83bde73633abdc
fc8e7856cdbc881c7c21b04ed72e73f564927205b7242bc514a3f631722eec9a
30e7e729531ea35ddcf04546fd443029c0014a8b8e73a6ff1e6f7b8f08302621";

struct PushVector {
    packet: &'static str,
    msg_key: &'static str,
    sha256_a: &'static str,
    sha256_b: &'static str,
    aes_key: &'static str,
    aes_iv: &'static str,
    plaintext: &'static str,
    payload: &'static str,
}

const A1: PushVector = PushVector {
    packet: "
243802b0b1250e286b51d43b657debb9853c3530345cba02cd074cc36baa8a3d
864264ee62ea1ac53c511a198f068d9321774fb3f730a1d1e8c97a20915df9b9
8b52ed5c4833f40cd3827499f5af6199f794a65546d85403885742267b27f5f7
d9dd0a0080fd87716fa45dd63d318075954611cf3b9ea3a0c42e422c50ba20ef
df7a3a496567421570188e9b18ea32a499242d56edf5f5e9bc3d46f2be7b59fe
ede7c217021b7d8eccb8f1298d8a62c4a621f985df87cd97900b6646e8724ea9
3647469233a36dd2ab06b4859983be08094332db4979d420714f6644fb8ee285
afe279685162bfb094928b01d716ba1954dbd2c51b6058c8",
    msg_key: "6b51d43b657debb9853c3530345cba02",
    sha256_a: "696e8227b5c5b386ccf2e1444b737b5c99ac179dfa170b623efdd768123d04a0",
    sha256_b: "301924e7c6bf6a1ff65e38de6b8b79414dbdbcc3d8cddbeaf685f3cbed420ea8",
    aes_key: "696e8227b5c5b386f65e38de6b8b79414dbdbcc3d8cddbea3efdd768123d04a0",
    aes_iv: "301924e7c6bf6a1fccf2e1444b737b5c99ac179dfa170b62f685f3cbed420ea8",
    plaintext: "
7f0000007b226c6f635f6b6579223a224d4553534147455f54455854222c226c
6f635f61726773223a5b22417273656e7920536d69726e6f76222c2261626364
656667225d2c22637573746f6d223a7b226d73675f6964223a22353930303437
222c2266726f6d5f6964223a223632383134227d2c226261646765223a223430
39227dab29a60d16649d1a1c96bd34ecfbd35ac7828250ef5efb0cfeca7cd416
b44a80a6fd466c0552eef85faf5219d56dcc8954977e44656656ef68e29e2742
894d29c59473366c2ec4e197fef2efd79fcc0a5fb3931acc9ff2806c212921ae",
    payload: r#"{"loc_key":"MESSAGE_TEXT","loc_args":["Arseny Smirnov","abcdefg"],"custom":{"msg_id":"590047","from_id":"62814"},"badge":"409"}"#,
};

const A2: PushVector = PushVector {
    packet: "
243802b0b1250e2898a3e1446e0bce562d5d3d63957e0c34017bf431cb17d5a5
ca31dfbb393e9873f38a6440c67769601ed6472c962b4e7b433b2345e62ad005
5c5000a0530331ce2df1caa5a030862832a2c3f025b66b516950661c712773d4
ddfd0c135d3f2cc38913b2e550065c81998267f7ae05c39e7094c3a852470df7
3b8c0f5c929636e9b40e80e3c7071c83d4493958fa5928dc80f399dce39c6a3a
d0e3a8d65568a4b3268787aa93f6ae31a877b73d6cb96d8320821707004b0231
efb01c554bf946e6",
    msg_key: "98a3e1446e0bce562d5d3d63957e0c34",
    sha256_a: "5db824145de35f427e4a59dd679b0d4712d1c95ffc8df861c2854aa9fe388e60",
    sha256_b: "ba46b853a81a817eb79444169e5c5de0c38d18ea1bc5cbd7608ac29eccad03b1",
    aes_key: "5db824145de35f42b79444169e5c5de0c38d18ea1bc5cbd7c2854aa9fe388e60",
    aes_iv: "ba46b853a81a817e7e4a59dd679b0d4712d1c95ffc8df861608ac29eccad03b1",
    plaintext: "
5d0000007b226c6f635f6b6579223a22222c226c6f635f61726773223a5b5d2c
22637573746f6d223a7b226368616e6e656c5f6964223a223131373638393534
3937222c226d61785f6964223a2231333539227d2c226261646765223a223022
7d250f80cb38245c504cfe061dd540f019dcaa71795c30763ddbef2bc43a6a27
7779a0bf6775fb10d8405c452175b6a484decd0aa40ba3f2f4023d4cc31aebe4
b5855926bb49f200c51d780a0634d9e4",
    payload: r#"{"loc_key":"","loc_args":[],"custom":{"channel_id":"1176895497","max_id":"1359"},"badge":"0"}"#,
};

#[test]
fn a_key_fingerprint() {
    let k = key(A_KEY);
    assert_eq!(
        sha1(&[k.as_bytes()]).to_vec(),
        h("d193f79bb5564dd3376a0e71243802b0b1250e28")
    );
    assert_eq!(
        k.fingerprint(),
        KeyFingerprint(h("243802b0b1250e28").try_into().expect("8"))
    );
    assert_eq!(k.fingerprint().to_i64(), 2886285856283441188);
}

fn check_push(v: &PushVector) {
    let k = key(A_KEY);
    let packet = h(v.packet);
    let mk = h16(v.msg_key);
    assert_eq!(&packet[..8], &k.fingerprint().0);
    assert_eq!(&packet[8..24], &mk);

    // KDF intermediates (x = 8).
    let kb = k.as_bytes();
    assert_eq!(sha256(&[&mk, &kb[8..44]]), h32(v.sha256_a));
    assert_eq!(sha256(&[&kb[48..84], &mk]), h32(v.sha256_b));
    let (aes_key, aes_iv) = kdf(&k, &mk, 8);
    assert_eq!(aes_key, h32(v.aes_key));
    assert_eq!(aes_iv, h32(v.aes_iv));

    // The padded plaintext and its msg_key.
    let plain = decrypt_packet(&k, 8, &mk, &packet[24..]).expect("authentic packet");
    assert_eq!(plain, h(v.plaintext));
    assert_eq!(msg_key(&k, &plain, 8), mk);

    // The end-to-end layer returns exactly the payload. Push payloads are JSON of any length,
    // so TDLib reads them with check_mod4 = false; the secret-chat reader (which requires
    // L % 4 == 0) authenticates them but rejects the layout.
    let payload = decrypt_e2e(&k, 8, &packet, false).expect("authentic message");
    assert_eq!(payload, v.payload.as_bytes());
    assert_ne!(v.payload.len() % 4, 0);
    assert_eq!(
        decrypt_message(&k, 8, &packet),
        Err(DecryptError::BadLayout {
            declared_len: v.payload.len() as i32,
            plaintext_len: packet.len() - 24
        })
    );

    // The same packet under the other direction's offset does not authenticate.
    assert_eq!(
        decrypt_e2e(&k, 0, &packet, false),
        Err(DecryptError::Undecryptable)
    );
    assert_eq!(
        decrypt_message(&k, 0, &packet),
        Err(DecryptError::Undecryptable)
    );
}

#[test]
fn a1_push_0() {
    check_push(&A1);
    assert_eq!(A1.payload.len(), 127);
}

#[test]
fn a2_push_1() {
    check_push(&A2);
    assert_eq!(A2.payload.len(), 93);
}

// ---------------------------------------------------------------------------------------------
// B. grammers KDF / msg_key / IGE
// ---------------------------------------------------------------------------------------------

fn counting_key() -> AuthKey {
    let mut b = [0u8; 256];
    for (i, v) in b.iter_mut().enumerate() {
        *v = i as u8;
    }
    AuthKey::from_array(b)
}

fn counting16() -> [u8; 16] {
    std::array::from_fn(|i| i as u8)
}

#[test]
fn b_fingerprint_and_aux_hash() {
    let k = counting_key();
    assert_eq!(k.fingerprint().0.to_vec(), h("32d1586ea457dfc8"));
    assert_eq!(k.fingerprint().0, [50, 209, 88, 110, 164, 87, 223, 200]);
    assert_eq!(sha1(&[k.as_bytes()])[..8].to_vec(), h("4916d6bdb7f78e68"));
}

#[test]
fn b_kdf_client_x0() {
    let k = counting_key();
    let mk = counting16();
    let kb = k.as_bytes();
    assert_eq!(
        sha256(&[&mk, &kb[0..36]]),
        h32("704ed09c8b41668abf4c7ce40fd0043cc92230184cd317a5a8573dd042bd059e")
    );
    assert_eq!(
        sha256(&[&kb[40..76], &mk]),
        h32("4d266000a550edabe8f99d244738f71dbddc44469b6bbd4acc9c2482fd3b9318")
    );
    let (aes_key, aes_iv) = kdf(&k, &mk, 0);
    assert_eq!(
        aes_key,
        h32("704ed09c8b41668ae8f99d244738f71dbddc44469b6bbd4aa8573dd042bd059e")
    );
    assert_eq!(
        aes_iv,
        h32("4d266000a550edabbf4c7ce40fd0043cc92230184cd317a5cc9c2482fd3b9318")
    );
}

#[test]
fn b_kdf_server_x8() {
    let k = counting_key();
    let mk = counting16();
    let kb = k.as_bytes();
    assert_eq!(
        sha256(&[&mk, &kb[8..44]]),
        h32("217725799b2458066ca32360a431c9160be4ad887140980dea2b4d69cf9c364e")
    );
    assert_eq!(
        sha256(&[&kb[48..84], &mk]),
        h32("669a6538917a4fa5458174a1fcfbc883906807b15033fdd0ab91ce7bdc47ffbc")
    );
    let (aes_key, aes_iv) = kdf(&k, &mk, 8);
    assert_eq!(
        aes_key,
        h32("217725799b245806458174a1fcfbc883906807b15033fdd0ea2b4d69cf9c364e")
    );
    assert_eq!(
        aes_iv,
        h32("669a6538917a4fa56ca32360a431c9160be4ad887140980dab91ce7bdc47ffbc")
    );
}

#[test]
fn b1_encrypt_client_data_v2() {
    let k = counting_key();
    let mut p = b"Hello, world! This data should remain secure!".to_vec();
    assert_eq!(p.len(), 45);
    p.extend_from_slice(&[0u8; 19]);
    assert_eq!(
        p,
        h("48656c6c6f2c20776f726c6421205468697320646174612073686f756c642072656d61696e2073656375726521
           00000000000000000000000000000000000000")
    );
    let kb = k.as_bytes();
    assert_eq!(
        sha256(&[&kb[88..120], &p]),
        h32("021d57cdcecd9b33a81729d46db54019a2bfd7f744f9b96c8d744ce4734566db")
    );
    let mk = msg_key(&k, &p, 0);
    assert_eq!(mk, h16("a81729d46db54019a2bfd7f744f9b96c"));
    let (aes_key, aes_iv) = kdf(&k, &mk, 0);
    assert_eq!(
        aes_key,
        h32("2d689d7521c73c1ebba0211aa5baa00f428c636adf5b26e46894867ac6e4eb58")
    );
    assert_eq!(
        aes_iv,
        h32("5a1ce9345d4b5db43787e7885d67597e51804bbf968fb781c5000182ba631c9c")
    );

    let (mk2, ct) = encrypt_packet(&k, 0, &p).expect("aligned plaintext");
    assert_eq!(mk2, mk);
    let mut out = k.fingerprint().0.to_vec();
    out.extend_from_slice(&mk2);
    out.extend_from_slice(&ct);
    assert_eq!(
        out,
        h(
            "32d1586ea457dfc8a81729d46db54019a2bfd7f744f9b96c4f716cfdc4477db2
           a2c15f6ddb85235fb9552f1d8407c6aaea00cc844c5a1bf6ac44b79b5edc2a23
           868b3d6073a590992c0f2975243d563ea180d218ee757c9a"
        )
    );
    // And back, as the server would (x = 0: the client wrote it).
    assert_eq!(decrypt_packet(&k, 0, &mk2, &ct).expect("authentic"), p);
}

#[test]
fn b2_decrypt_server_data_v2() {
    let k = key("
5d2e7d65f49ec28bd029a88761ea27b8a4c79f12226525443e7d7c596ef33035
30db2107e89aa997c7a0164ab694187adeff156bd6ef7118a1962347753c0e7e
89a0354b8ec364f9997e71bc6923fb86e8e43491e010606a6ce845e2fa019409
77ef0aa32adf5a97dbf6d428ec0434d717a2d3ad19622cc05887642113c7965f
fb862a3e3ccb0ab95addda57f89245dbd76b492348f8e94bd5a7c0e0b8480852
3cfd1ea80b32fe9ad198bc2e103fceb7d52492ecc0273a28674bc923eee59265
ab17a002df1f4aa2c59b819a5e5e1d105ec117336f5c76c6b187037d4b4270ce
e9cc21071d97e9bca220c6d7b01b998cf2e5cdb9a50ecda1852a36e635690c8e");
    let packet = h("
7a7183c2c10e4f4df945fa9a9abd35e7c3840b61f045304f39674c19c0e20978
4f50f6226a073529d675c92cbf0bfa8c99a79b3f39c72a5d9a026d431ab7407c
a04ecc55187d6c45f17871524edd90cea02ed728e14d7cb18aea2a636158f094
59a9437710d894c79f368c4e8164b7647ea98612aefe942c5d92121acb8db02d
ccceb66d0f8720ac12a06db0582bfd955be34f365118e3bab8cd080ce6b45b28
eac56dcd2a29374e");
    assert_eq!(packet.len(), 168);
    assert_eq!(k.fingerprint().0.to_vec(), h("7a7183c2c10e4f4d"));
    assert_eq!(&packet[..8], &k.fingerprint().0);
    let mk: [u8; 16] = packet[8..24].try_into().expect("16");
    assert_eq!(mk, h16("f945fa9a9abd35e7c3840b61f045304f"));
    let (aes_key, aes_iv) = kdf(&k, &mk, 8);
    assert_eq!(
        aes_key,
        h32("39ed549b653074095a86a6b00d999fb90b98bcb81b4e53a5e6410e7e13320579")
    );
    assert_eq!(
        aes_iv,
        h32("f319644a55bd36949fbf5f0e202bd931408b008c533002cb7ae956aeb11583fb")
    );
    let plain = decrypt_packet(&k, 8, &mk, &packet[24..]).expect("authentic server packet");
    assert_eq!(
        plain,
        h("
fc826a02248b28fd60f2c4822443ad6801f0c1c2918b305e0200000058000000
dcf8f1730200000001a8c1c2918b305e010000001c0000000809c29ec4fd33ad
918b305e18a88ea607ee5816fc826a02248b28fd01ccc1c2918b305e02000000
14000000c5737734c4fd33ad918b305e6408300000000000fce66704a3cd8ee9
d0ae6fab672c60c04a3f1fd4490e51f6")
    );
    // Wrong direction: does not authenticate.
    assert_eq!(
        decrypt_packet(&k, 0, &mk, &packet[24..]),
        Err(DecryptError::Undecryptable)
    );
}

#[test]
fn b3_raw_ige() {
    let k: [u8; 32] = std::array::from_fn(|i| i as u8);
    let mut buf = k;
    aes_ige_encrypt(&k, &k, &mut buf).expect("aligned");
    assert_eq!(
        buf,
        h32("e28112a53e5c89c7b1ea8071c133699fd4e86b26c4bac9fc5af1ab8ce27a44a4")
    );
    let mut buf = k;
    aes_ige_decrypt(&k, &k, &mut buf).expect("aligned");
    assert_eq!(
        buf,
        h32("e5777afacd7b2c16f7ac40cae61ef603fee6098fb8a8860ab9ee672cd7e5bacc")
    );
    // Round trip and alignment check.
    let mut buf = k;
    aes_ige_encrypt(&k, &k, &mut buf).expect("aligned");
    aes_ige_decrypt(&k, &k, &mut buf).expect("aligned");
    assert_eq!(buf, k);
    let mut odd = [0u8; 17];
    assert!(aes_ige_encrypt(&k, &k, &mut odd).is_err());
    assert!(aes_ige_decrypt(&k, &k, &mut odd).is_err());
}

// ---------------------------------------------------------------------------------------------
// C. TDLib AesIgeState: LCG inputs, zlib CRC32 of the ciphertext
// ---------------------------------------------------------------------------------------------

struct Lcg(u32);

impl Lcg {
    fn next(&mut self) -> u8 {
        self.0 = self.0.wrapping_mul(123457567).wrapping_add(987651241);
        ((self.0 >> 23) & 0xff) as u8
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next()).collect()
    }
}

/// zlib CRC-32 (reflected, polynomial 0xEDB88320).
fn crc32(data: &[u8]) -> u32 {
    let mut table = [0u32; 256];
    for (i, t) in table.iter_mut().enumerate() {
        let mut c = i as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
        }
        *t = c;
    }
    !data.iter().fold(!0u32, |c, &b| {
        table[((c ^ u32::from(b)) & 0xff) as usize] ^ (c >> 8)
    })
}

#[test]
fn c_crc32_self_check() {
    assert_eq!(crc32(b""), 0);
    assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
}

#[test]
fn c_tdlib_aes_ige_state() {
    let expected: [(usize, u32, Option<[&str; 4]>); 6] = [
        (0, 0, None),
        (
            16,
            2045698207,
            Some([
                "d48738a34a08cf4f4675a41f19d7cf52a7a7fc9962cf66174ea7d85bfdf8ad67",
                "92fcd0adc15bbb0dcb3079d88402a5d04ecc6b261ef6847a74593cdf653f6ed4",
                "6153cb81c0c03e6ffa5422dc1f595247",
                "11f422b6abcd37a927c1a8ebdbccdd5f",
            ]),
        ),
        (
            32,
            2423540300,
            Some([
                "3ef36a602c7c290e9f61268b6ea7ff16fec2e55b47989477d17d5df8b1381eda",
                "8efd468ba172d4e8aeaa573d0e2ced49a7ed4639f052a1a8ef30cba53dcb25ad",
                "4c7b4aeccf62f232603b211f558bf57195491f5397d8db64620efab08c30dab5",
                "c7dc97b92ae0375496947e56678e2bf4b1b5f178a91dfa2ddeb69d9d5db2361c",
            ]),
        ),
        (
            256,
            525522475,
            Some([
                "04274ca6d84a957149c2516a665c5695cd560c68ae5b68c7c78af209686fc1f1",
                "6f087cb64bc259fcfb791fd80d7c26d0a28654d867c61f569bd890200eca3c79",
                "2da53cc4a135cad9fbd312d3484becb728dabefbc92d7e85eb61b5a7dc0478297b126f4038fad18f1097642d93377f9ee09709d8a5e4794022bcd6ab252bb75e0daf420eca342fe0d918c56a4a29d9b0bca2d4285d32abb7edf5e7b1ba789ddda3b9756f1725a50c1599f5c92c61bb2c7b3cde2ab056d5270b4ca7fa5a2cebe6fc72c7a2e00cf3518557b58bfa20e553dea4e81e5f90b7d23d02d7c5c58660bad91af9e7e52ad8f2e994c5ef74a61664a41bb245292110f842563752bdc7bd98f9f0ca7fe5be152d0090e43559310e9f8ee0fbdecf49a0d8db8986e2002ec2c01d34fba9a10969428b8ad39e69048f455c34832a114728b2c7da84b44efb2e74",
                "90a1881c24ce1b43cca5f784cd7e247f7183b2cdf9f0e856d87b1163321a49ce89d849611a03c9284454bb4a2e1e7aa6a139f87474e9a5ebbfe75e776238197bcd226a2c1cf0d03a102804dcf208cc17d90552414008c1100d922116a01575e6a56d4dcbb67616605c2c637b9ac5a7a1f0bf1ad37483612c5a7a215f55d6e171f87162b1b10b60dd33cd87c6ffeaa873a20d86cb780c7678caa44db27569b839a3c23c6c16655049f47177085dcedec5ae6b9c21014e933e733801a92d881b7f9ed7df614730e5fa569b08cc3fd25b4f1d9a27490202223f748d5dd64368590e3c641f570ae7210b35a54caa6de47f312a2abd170754ac9569357e7bf79397b3",
            ]),
        ),
        (1024, 1545267325, None),
        (65536, 724143417, None),
    ];
    for (len, crc, full) in expected {
        let mut lcg = Lcg(len as u32);
        let plain = lcg.bytes(len);
        let k: [u8; 32] = lcg.bytes(32).try_into().expect("32");
        let iv: [u8; 32] = lcg.bytes(32).try_into().expect("32");
        let mut buf = plain.clone();
        aes_ige_encrypt(&k, &iv, &mut buf).expect("aligned");
        assert_eq!(crc32(&buf), crc, "crc32 for length {len}");
        if let Some([kh, ivh, pth, cth]) = full {
            assert_eq!(k.to_vec(), h(kh), "key, length {len}");
            assert_eq!(iv.to_vec(), h(ivh), "iv, length {len}");
            assert_eq!(plain, h(pth), "plaintext, length {len}");
            assert_eq!(buf, h(cth), "ciphertext, length {len}");
        }
        aes_ige_decrypt(&k, &iv, &mut buf).expect("aligned");
        assert_eq!(buf, plain, "round trip, length {len}");
    }
}

// ---------------------------------------------------------------------------------------------
// D. SHA-1 / SHA-256
// ---------------------------------------------------------------------------------------------

#[test]
fn d_hashes() {
    let million_a = vec![b'a'; 1_000_000];
    let cases: [(&[u8], &str, &str); 4] = [
        (
            b"",
            "da39a3ee5e6b4b0d3255bfef95601890afd80709",
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        ),
        (
            b"1",
            "356a192b7913b04c54574d18c28d46e6395428ab",
            "6b86b273ff34fce19d6b804eff5a3f5747ada4eaa22f1d49c01e52ddb7875b4b",
        ),
        (
            b"short test string",
            "b91cac430a1ac74a4d25e042dfece9433272d6b0",
            "c8f31a63b43c3ca3f00acc3ae149c30f99a145c8adb84260ccb64cbebd0ef296",
        ),
        (
            &million_a,
            "34aa973cd4c4daa4f61eeb2bdbad27316534016f",
            "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0",
        ),
    ];
    for (input, s1, s256) in cases {
        assert_eq!(sha1(&[input]).to_vec(), h(s1));
        assert_eq!(sha256(&[input]).to_vec(), h(s256));
        // Splitting the input into parts does not change the digest.
        let mid = input.len() / 3;
        assert_eq!(sha1(&[&input[..mid], &input[mid..]]).to_vec(), h(s1));
        assert_eq!(
            sha256(&[&input[..mid], &[], &input[mid..]]).to_vec(),
            h(s256)
        );
    }
}

// ---------------------------------------------------------------------------------------------
// E. DH parameters
// ---------------------------------------------------------------------------------------------

const E_PRIME: &str = "
c71caeb9c6b1c9048e6c522f70f13f73980d40238e3e21c14934d037563d930f
48198a0aa7c14058229493d22530f4dbfa336f6e0ac925139543aed44cce7c37
20fd51f69458705ac68cd4fe6b6b13abdc9746512969328454f18faf8c595f64
2477fe96bb2a941d5bcd1d4ac8cc49880708fa9b378e3c4f3a9060bee67cf9a4
a4a695811051907e162753b56b0f6b410dba74d8a84b2a14b3144e0ef1284754
fd17ed950d5965b4b9dd46582db1178d169c6bc465b0d6ff9ca3928fef5b9ae4
e418fc15e83ebea0f87fa9ff5eed70050ded2849f47bf959d956850ce929851f
0d8115f635b105ee2e4e15d04b2454bf6f4fadf034b10403119cd8e3b92fcc5b";

/// A 2048-bit prime p (the first prime above 0xc0ffee·2^2024) whose (p-1)/2 is divisible by 5.
/// Generated with sympy (`nextprime`); primality is re-checked below with Fermat tests.
const PRIME_Q_SMALL_FACTOR: &str = "
c0ffee0000000000000000000000000000000000000000000000000000000000
0000000000000000000000000000000000000000000000000000000000000000
0000000000000000000000000000000000000000000000000000000000000000
0000000000000000000000000000000000000000000000000000000000000000
0000000000000000000000000000000000000000000000000000000000000000
0000000000000000000000000000000000000000000000000000000000000000
0000000000000000000000000000000000000000000000000000000000000000
00000000000000000000000000000000000000000000000000000000000000d3";

/// A 2048-bit prime p = 2·r·s + 1 with r, s 1024-bit primes: (p-1)/2 = r·s has no small factor,
/// so only Miller-Rabin can reject it. Generated with sympy.
const PRIME_Q_SEMIPRIME: &str = "
cba0000000000000000000000000000000000000000000000000000000000000
0000000000000000000000000000000000000000000000000000000000000000
0000000000000000000000000000000000000000000000000000000000000000
0000000000000000000000000000000000000000000000000000000000068e70
9e00000000000000000000000000000000000000000000000000000000000000
0000000000000000000000000000000000000000000000000000000000000000
0000000000000000000000000000000000000000000000000000000000000000
0000000000000000000000000000000000000000000000000000000003cd69b7";
const SEMIPRIME_R: &str = "
9000000000000000000000000000000000000000000000000000000000000000
0000000000000000000000000000000000000000000000000000000000000000
0000000000000000000000000000000000000000000000000000000000000000
000000000000000000000000000000000000000000000000000000000004a2a3";
const SEMIPRIME_S: &str = "
b500000000000000000000000000000000000000000000000000000000000000
0000000000000000000000000000000000000000000000000000000000000000
0000000000000000000000000000000000000000000000000000000000000000
0000000000000000000000000000000000000000000000000000000000000069";

/// RFC 3526 group 14 (2048-bit MODP): a well-known safe prime that is *not* in the built-in
/// table, with p ≡ 7 (mod 8), 2 (mod 3), 4 (mod 5), 23 (mod 24), 5 (mod 7): every g in 2..=7 is
/// valid for it.
const RFC3526_PRIME: &str = "
ffffffffffffffffc90fdaa22168c234c4c6628b80dc1cd129024e088a67cc74
020bbea63b139b22514a08798e3404ddef9519b3cd3a431b302b0a6df25f1437
4fe1356d6d51c245e485b576625e7ec6f44c42e9a637ed6b0bff5cb6f406b7ed
ee386bfb5a899fa5ae9f24117c4b1fe649286651ece45b3dc2007cb8a163bf05
98da48361c55d39a69163fa8fd24cf5f83655d23dca3ad961c62f356208552bb
9ed529077096966d670c354e4abc9804f1746c08ca18217c32905e462e36ce3b
e39e772c180e86039b2783a2ec07a28fb5c55df06f4c52c9de2bcbf695581718
3995497cea956ae515d2261898fa051015728e5a8aacaa68ffffffffffffffff";

fn big(s: &str) -> num_bigint::BigUint {
    num_bigint::BigUint::from_bytes_be(&h(s))
}

#[test]
fn e_prime_constant_matches_vector() {
    assert_eq!(TELEGRAM_DH_PRIME.to_vec(), h(E_PRIME));
}

#[test]
fn e_telegram_prime_generators() {
    let p = h(E_PRIME);
    for g in [3, 4, 7] {
        let cfg = DhConfig::validate(g, &p, 12).expect("valid generator for the Telegram prime");
        assert_eq!(
            cfg,
            DhConfig {
                g,
                p: p.clone(),
                version: 12
            }
        );
    }
    for g in [2, 5, 6] {
        assert_eq!(
            DhConfig::validate(g, &p, 12),
            Err(DhError::GeneratorResidue { g })
        );
    }
    for g in [i32::MIN, -1, 0, 1, 8, 9, i32::MAX] {
        assert_eq!(
            DhConfig::validate(g, &p, 12),
            Err(DhError::BadGenerator { g })
        );
    }
}

#[test]
fn e_prime_size_and_parity() {
    let p = h(E_PRIME);
    // 2047-bit p in 256 bytes (top bit clear).
    let half: Vec<u8> = (big(E_PRIME) >> 1u32).to_bytes_be();
    let mut p2047 = vec![0u8; 256 - half.len()];
    p2047.extend_from_slice(&half);
    assert_eq!(p2047.len(), 256);
    assert_eq!(DhConfig::validate(3, &p2047, 1), Err(DhError::PrimeSize));
    // 2047-bit p as 255 bytes, a 257-byte p, an empty p.
    assert_eq!(DhConfig::validate(3, &half, 1), Err(DhError::PrimeSize));
    let mut long = vec![0u8];
    long.extend_from_slice(&p);
    assert_eq!(DhConfig::validate(3, &long, 1), Err(DhError::PrimeSize));
    assert_eq!(DhConfig::validate(3, &[], 1), Err(DhError::PrimeSize));
    // Even p.
    let mut even = p.clone();
    even[255] &= 0xfe;
    assert_eq!(DhConfig::validate(4, &even, 1), Err(DhError::PrimeNotSafe));
    // A composite odd p: p + 4 is divisible by 3 (p ≡ 2 mod 3).
    let composite = (big(E_PRIME) + 4u32).to_bytes_be();
    assert_eq!(
        DhConfig::validate(4, &composite, 1),
        Err(DhError::PrimeNotSafe)
    );
}

fn fermat(p: &num_bigint::BigUint, base: u32) -> bool {
    num_bigint::BigUint::from(base).modpow(&(p - 1u32), p) == num_bigint::BigUint::from(1u32)
}

#[test]
fn e_prime_with_composite_half_small_factor() {
    let p = big(PRIME_Q_SMALL_FACTOR);
    assert_eq!(p.bits(), 2048);
    assert!(
        fermat(&p, 2) && fermat(&p, 3),
        "p itself is (probably) prime"
    );
    let q: num_bigint::BigUint = &p >> 1u32;
    assert_eq!(&q % 5u32, num_bigint::BigUint::from(0u32));
    assert_eq!(
        DhConfig::validate(4, &h(PRIME_Q_SMALL_FACTOR), 1),
        Err(DhError::PrimeNotSafe)
    );
}

#[test]
fn e_prime_with_semiprime_half() {
    let p = big(PRIME_Q_SEMIPRIME);
    assert_eq!(p.bits(), 2048);
    assert!(
        fermat(&p, 2) && fermat(&p, 3),
        "p itself is (probably) prime"
    );
    let (r, s) = (big(SEMIPRIME_R), big(SEMIPRIME_S));
    assert_eq!(r.bits(), 1024);
    assert_eq!(s.bits(), 1024);
    assert_eq!(&p >> 1u32, &r * &s);
    assert!(
        fermat(&r, 2) && fermat(&s, 2),
        "r and s are (probably) prime"
    );
    // g = 4 passes the residue rule for any p: the rejection is the primality test's.
    assert_eq!(
        DhConfig::validate(4, &h(PRIME_Q_SEMIPRIME), 1),
        Err(DhError::PrimeNotSafe)
    );
    assert!(!bench_support::is_safe_prime_uncached(&h(
        PRIME_Q_SEMIPRIME
    )));
}

/// Slow path 1 of 2: the full Miller-Rabin test on the Telegram prime (bypassing the table).
#[test]
fn e_telegram_prime_full_primality_test() {
    assert!(bench_support::is_safe_prime_uncached(&TELEGRAM_DH_PRIME));
}

/// Slow path 2 of 2: an unknown safe prime is accepted through the full test, once; the cache
/// then serves every generator without re-testing.
#[test]
fn e_rfc3526_prime_full_validation_and_cache() {
    let p = h(RFC3526_PRIME);
    let mut cache = DhConfigCache::default();
    let cfg = cache
        .validate_and_insert(2, &p, 100)
        .expect("RFC 3526 group 14 is a safe prime");
    assert_eq!(cfg.g, 2);
    for g in 3..=7 {
        let cfg = cache
            .validate_and_insert(g, &p, 100 + g)
            .expect("every g is valid");
        assert_eq!(cache.get(100 + g), Some(&cfg));
    }
    assert_eq!(
        cache.validate_and_insert(8, &p, 200),
        Err(DhError::BadGenerator { g: 8 })
    );
    assert_eq!(cache.get(200), None);
}

// ---------------------------------------------------------------------------------------------
// F. The whole path of a chat through the public API, against an independent implementation
// ---------------------------------------------------------------------------------------------

mod f {
    use secret_core::Role;
    use secret_core::chat::{
        Call, Chat, ChatRequest, Event, IncomingEncrypted, MessageEntropy, RemoteChat, SendMethod,
    };
    use secret_core::dh::{DhConfig, DhSecret, TELEGRAM_DH_PRIME};
    use secret_core::rand::SeededRandom;
    use secret_core::tl::enums::{DecryptedMessage, DecryptedMessageAction};
    use secret_core::tl::types;

    const DOC: &str = include_str!("VECTORS.md");

    /// The hex value written after `label =` in `part` (the value's lines follow the label).
    fn value(part: &str, label: &str) -> Vec<u8> {
        let start = part
            .find(&format!("{label} ="))
            .unwrap_or_else(|| panic!("{label} not in VECTORS.md F"));
        let rest = &part[start..];
        let rest = &rest[rest.find('\n').expect("newline") + 1..];
        let hex: String = rest
            .lines()
            .take_while(|l| !l.is_empty() && l.bytes().all(|c| c.is_ascii_hexdigit()))
            .collect();
        hex::decode(hex).expect("hex")
    }

    fn sections() -> (&'static str, &'static str, &'static str) {
        let f = &DOC[DOC.find("## F.").expect("F")..DOC.find("## G.").expect("G")];
        let c = f.find("The creator's first").expect("creator part");
        let a = f.find("The acceptor's first").expect("acceptor part");
        (&f[..c], &f[c..a], &f[a..])
    }

    fn secret(b: Vec<u8>) -> DhSecret {
        DhSecret::from_array(b.try_into().expect("256 bytes"))
    }

    fn ttl_message(random_id: i64, ttl_seconds: i32) -> DecryptedMessage {
        DecryptedMessage::Service(types::DecryptedMessageService {
            random_id,
            action: DecryptedMessageAction::SetMessageTTL(
                types::DecryptedMessageActionSetMessageTTL { ttl_seconds },
            ),
        })
    }

    #[test]
    fn f_exponents_to_key_to_fingerprint_to_data_byte_for_byte() {
        let (dh_part, creator, acceptor) = sections();
        let dh = DhConfig::validate(3, &TELEGRAM_DH_PRIME, 1).expect("prime");
        let mut rng = SeededRandom::new(1);

        // Exponent a -> g_a.
        let (mut a, req, _) =
            Chat::request_with_secret(7, 100, 200, dh.clone(), secret(value(dh_part, "a")), 0)
                .expect("request");
        assert_eq!(req.g_a, value(dh_part, "g_a"));

        // Exponent b -> g_b -> key -> fingerprint.
        let request = ChatRequest {
            chat_id: 7,
            access_hash: 1,
            admin_id: 100,
            participant_id: 200,
            g_a: req.g_a.clone(),
        };
        let (mut b, _) = Chat::from_request(&request, 200, dh, 0).expect("from_request");
        let out = b
            .accept_with_secret(secret(value(dh_part, "b")), 0, &mut rng)
            .expect("accept");
        let Some(Call::AcceptEncryption {
            g_b,
            key_fingerprint,
        }) = out.calls.first().cloned()
        else {
            panic!("acceptEncryption first")
        };
        assert_eq!(g_b, value(dh_part, "g_b"));
        let fp = value(dh_part, "key_fingerprint");
        assert_eq!(key_fingerprint.to_le_bytes().to_vec(), fp);
        assert_eq!(b.key_fingerprint().map(|k| k.0.to_vec()), Some(fp.clone()));
        assert_eq!(
            b.state().pfs().key().map(|k| k.key.as_bytes().to_vec()),
            Some(value(dh_part, "key"))
        );
        let ready = a.on_remote_update(
            &RemoteChat::Accepted {
                access_hash: 1,
                g_a_or_b: g_b,
                key_fingerprint,
            },
            0,
            &mut rng,
        );
        assert_eq!(a.key_fingerprint().map(|k| k.0.to_vec()), Some(fp));
        let notify_layer = ready.transmits().next().expect("NotifyLayer").clone();

        // Each side's first application message -> data, byte for byte.
        for (chat, part, message, x_role) in [
            (
                &mut a,
                creator,
                ttl_message(0x0123_4567_89ab_cdef, 30),
                Role::Creator,
            ),
            (&mut b, acceptor, ttl_message(-2, 86400), Role::Acceptor),
        ] {
            assert_eq!(chat.role(), x_role);
            let entropy = MessageEntropy {
                random_bytes: value(part, "random_bytes"),
                padding: value(part, "padding"),
            };
            let sent = chat
                .send_message_with_entropy(
                    message,
                    SendMethod::SendEncryptedService,
                    entropy,
                    0,
                    &mut rng,
                )
                .expect("send");
            let data = &sent.output.transmits().next().expect("transmit").data;
            assert_eq!(
                hex::encode(data),
                hex::encode(value(part, "data")),
                "{x_role:?}"
            );
        }

        // And the other side reads them, in order.
        let deliver = |chat: &mut Chat, random_id, data, rng: &mut SeededRandom| {
            chat.receive(
                &IncomingEncrypted {
                    random_id,
                    date: 1,
                    data,
                },
                0,
                rng,
            )
            .expect("received")
        };
        let _ = deliver(&mut b, notify_layer.random_id, notify_layer.data, &mut rng);
        let o = deliver(
            &mut b,
            0x0123_4567_89ab_cdef,
            value(creator, "data"),
            &mut rng,
        );
        assert!(o.events.contains(&Event::TtlChanged(30)), "{:?}", o.events);
    }

    #[test]
    fn f_entropy_that_breaks_the_format_is_refused() {
        let (dh_part, creator, _) = sections();
        let dh = DhConfig::validate(3, &TELEGRAM_DH_PRIME, 1).expect("prime");
        let mut rng = SeededRandom::new(2);
        let (mut a, req, _) =
            Chat::request_with_secret(7, 100, 200, dh.clone(), secret(value(dh_part, "a")), 0)
                .expect("request");
        let request = ChatRequest {
            chat_id: 7,
            access_hash: 1,
            admin_id: 100,
            participant_id: 200,
            g_a: req.g_a,
        };
        let (mut b, _) = Chat::from_request(&request, 200, dh, 0).expect("from_request");
        let out = b
            .accept_with_secret(secret(value(dh_part, "b")), 0, &mut rng)
            .expect("accept");
        let Some(Call::AcceptEncryption {
            g_b,
            key_fingerprint,
        }) = out.calls.first().cloned()
        else {
            panic!()
        };
        let _ = a.on_remote_update(
            &RemoteChat::Accepted {
                access_hash: 1,
                g_a_or_b: g_b,
                key_fingerprint,
            },
            0,
            &mut rng,
        );
        let before = a.state().clone();
        for (rb, pad) in [
            (vec![0u8; 14], value(creator, "padding")),
            (value(creator, "random_bytes"), vec![0; 11]),
            (value(creator, "random_bytes"), vec![0; 25]),
        ] {
            let e = MessageEntropy {
                random_bytes: rb,
                padding: pad,
            };
            assert!(
                a.send_message_with_entropy(
                    ttl_message(5, 1),
                    SendMethod::SendEncrypted,
                    e,
                    0,
                    &mut rng
                )
                .is_err()
            );
            assert_eq!(a.state(), &before, "a refused send changes nothing");
        }
        // A secret whose public value is out of range is refused, not used.
        let mut one = [0u8; 256];
        one[255] = 1;
        let dh = DhConfig::validate(3, &TELEGRAM_DH_PRIME, 1).expect("prime");
        assert!(Chat::request_with_secret(8, 1, 2, dh, DhSecret::from_array(one), 0).is_err());
    }
}
