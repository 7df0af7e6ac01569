// Package mhe implements threshold homomorphic aggregation: multiparty BGV with a t-of-n
// threshold secret key (Mouchet, Troncoso-Pastoriza, Bossuat and Hubaux, "Multiparty
// Homomorphic Encryption from Ring-Learning-with-Errors", PETS 2021; Mouchet, Bertrand and
// Hubaux, "An Efficient Threshold Access-Structure for RLWE-Based Multiparty Homomorphic
// Encryption", ePrint 2022/780), on lattigo v5's mhe and bgv packages, as an agg.Protocol
// named "mhe". The clients encrypt their quantized updates under a collective public key, the
// server adds the ciphertexts, and t clients help it decrypt the sum, and nothing else. BGV
// sums integers exactly, so the decrypted sum is the sum of the clients' encodings (package
// quant) to the last bit.
//
// Where to start: a task runs one key set-up ([RunSetup] in memory; [NewSetupServer] and
// [NewSetupMember] over the network), after which each member persists its [KeyMaterial] and
// the server its [PublicSetup]; every round then runs [New] on both sides, as package agg
// describes.
//
// # Threat model
//
// The server and up to t-1 colluding clients learn nothing about the other clients' updates
// but their sum; the server learns that sum only once t members have sent it decryption
// shares, and it never asks for them unless t members sent a ciphertext, so that it never
// learns a sum of fewer than t updates. The members' shares of the secret key travel through
// the server encrypted to each recipient (HPKE over ML-KEM-768 + X25519), so the server never
// holds a key share. Parties are honest but curious: a server that deviates (asks a member
// twice for one aggregate under different member sets, without re-randomizing it; substitutes
// HPKE keys during the set-up) or a client that sends a malformed ciphertext or share can
// learn more or break the sum; see below for the checks that are made.
//
// # Key set-up, once per task
//
// With n members and threshold t (SetupConfig), in three phases relayed by the server:
//
//  0. Each member i draws a ternary secret key share s_i and sends its public key share
//     -a·s_i + e_i, where a comes from a common reference string derived from the set-up's
//     config (task, epoch, sizes: public), with an HPKE public key. The server adds the
//     public key shares up into the collective public key (-a·s + e, a), s = Σ s_i, and sends
//     the roster of members and their HPKE keys.
//  1. Each member splits s_i t-of-n with Shamir over R_q (lattigo's Thresholdizer: member j's
//     point is j) and sends each other member its share, sealed with HPKE and bound to the
//     set-up, sender and recipient. The server routes them.
//  2. Each member opens its shares and adds them up: its threshold share of s. It confirms the
//     key set's ID (a hash of the config, the roster and the public key), which the server
//     checks, and keeps a KeyMaterial.
//
// Members absent in phase 0 are left out as long as t remain (Shamir points stay the member
// numbers); a member that drops later fails the set-up, which then runs again (with the next
// Epoch). A new set-up is needed when the membership changes beyond what the threshold
// covers: when fewer than t of the set-up's members can be online to decrypt, or to add a
// member (there is no resharing). Members that leave are fine as long as t remain, but they
// keep their key shares: to shut out a member, run a new set-up.
//
// # A round
//
// Phase 0: each client quantizes its input (package quant, with the round's MaxWeight and
// the cohort's size), reads each word as a signed integer modulo T and packs the words into
// the N = 4096 coefficients of BGV plaintexts, 4095 a plaintext, the last coefficient of
// each being a check that holds 1. It encrypts each plaintext under the collective public key
// and sends the ciphertexts. The server adds them up as they arrive, in place.
//
// Phase 1: the server picks t members among those whose ciphertexts it holds, and sends
// them the aggregate's second halves c1 and the list of the t members. Each computes, for
// every ciphertext, the decryption share λ_i·s_i·c1 + e_i (lattigo's Combiner, for the
// Lagrange coefficient λ_i of the list, and KeySwitchProtocol to the zero key), where e_i is
// flooding noise. The server adds the t shares to the first halves c0, which gives the
// plaintexts plus noise, decodes them, checks that every check coefficient counts the
// contributors (ErrDecryption otherwise: a wrong share; the server then holds only garbage)
// and decodes the sum with package quant.
//
// If an asked member does not answer (or sends a share that is refused), the server asks
// again in the next phase, first the members that did answer and then others that sent a
// ciphertext, up to phase 8, and aborts with agg.ErrTooFewClients when fewer than t are left.
// It does not ask more than t at once and keep the first t answers: a share depends on the
// list of members through λ_i, and two shares of one member for one aggregate under two lists
// would let the server solve for the flooding noise, coefficient by coefficient (a lattice of
// dimension two), and then for the member's key share. So before it asks again, the server
// adds a fresh encryption of zero to the aggregate, which makes c1 new, and clients refuse a
// second request for an aggregate they have answered (within one round's state; a client
// that restarts mid-round relies on the server for this).
//
// Clients that send no ciphertext are not in the sum; clients that drop after sending one are
// (agg.Sum.Contributors lists them); the round completes as long as t members remain to
// decrypt.
//
// # Parameters and security
//
// Ring degree N = 4096, ternary secrets (each coefficient 0 or ±1 with probability 1/3 each)
// and Gaussian errors of σ = 3.2, as in the homomorphic encryption standard (Albrecht et al.,
// 2018). Keys live modulo q0·p0, a 61-bit prime and a 30-bit prime (91 bits): the standard
// gives 128-bit security at N = 4096 for moduli of up to 109 bits, so these keys are well
// within it. Ciphertexts live modulo q0 alone: encryption works modulo q0·p0 and divides by
// p0 before it sends, as lattigo's encryptor does with a special modulus, which leaves a
// rounding noise of about sqrt(N·n/18) (some 150 for 100 members) instead of the
// sqrt(4/3·N·n)·σ (some 2,400) of encrypting modulo q0 directly. There is a single ciphertext
// level, so nothing is ever encrypted above the lowest one, and additions need no more
// modulus. The scheme is BGV, not CKKS: sums are exact, and no big.Float scale is involved.
//
// The plaintext modulus T is the least prime above 2^(Bits + ceil(log2(n·MaxWeight))) that
// is 1 mod 2N: the sum of n encodings, each word w·q with |q| <= 2^(Bits-1) - 1 and
// w <= MaxWeight, then lies in (-T/2, T/2) (the same reasoning as package quant's word size).
// With the defaults (16 bits, MaxWeight = 2^16/n) that is 2^32 + 24577. A round checks its
// own cohort and MaxWeight against it and refuses what does not fit.
//
// Decryption computes T·(c0 + c1·s) = m + T·e modulo q0 and is exact while every coefficient
// of the noise e stays below B = (q0/2 - T)/T, some 2^28 for T ≈ 2^32. The noise is the
// aggregate's encryption noise (standard deviation σ_ct ≈ sqrt(n + 7)·sqrt(N·n/18), counting n
// clients and up to 7 re-randomizations) plus t flooding terms. The flooding σ of each share
// is the largest that keeps the total within B/12 standard deviations, so that a coefficient
// overflows with probability below 2^-108 (below 2^-88 for a whole round of a million
// values). For 100 members (t = 51, default weights): B = 2^28, σ_ct ≈ 1,560, σ = 2^21.6 per
// share, total flooding 2^24.4, 2^13.8 times σ_ct. For 17 members with weights up to 1000
// (t = 9): T ≈ 2^31, σ = 2^23.8, 2^17.2 times σ_ct. A set-up is refused when the ratio
// would fall below 2^10 (weights too wide for the modulus: declare smaller ones, or fewer
// bits). This is flooding in the practical sense (lattigo's own examples flood with
// σ = 2^30), not the 2^40 of a statistical argument, which would need a modulus of some 100
// bits in two words, and double the bytes and the server's time.
//
// A ciphertext of 4095 values is two polynomials of 4096 words of 8 bytes: 16 bytes a value,
// 4x a float32. Decryption shares are half that, from t members.
//
// What it does not do: prove that ciphertexts and shares are well formed (no malicious
// security: a member can garble the sum; a wrong share is detected, not attributed);
// bootstrapping or multiplication (the parameters are for additions only); resharing the key
// to a new member set; authenticate the members' HPKE keys beyond the transport's mTLS.
package mhe
