// Package policy decides who may do what in a fedweave federation, and keeps the audit log
// that records it. Decisions are made by cedar policies (github.com/cedar-policy/cedar-go)
// over a typed schema; see DESIGN.md, "Security model and policies".
//
// # What it decides
//
// A [Request] names a principal (from the caller's verified certificate,
// fedweave://FED/org/ORG/ROLE/NAME), an action (one per server method, now and planned: Join,
// SubmitUpdate, ReportEval, DownloadModel, Infer, Explain, RequestErasure, ReadPolicy,
// ChangePolicy, ReadAudit, ManageRetention), a resource (a Task, Model, Checkpoint, Org or
// Federation) and a context. [Authorizer.Decide] returns a [Decision]: allow or deny, with the
// ids of the policies that determined it.
//
// # The schema
//
// The schema (fedweave.cedarschema, embedded as [DefaultSchema] and shipped in
// examples/policies) declares:
//
//   - Federation; Org (federation, region, optional consent: the purposes the org accepts),
//     whose parent is its Federation while it is a member;
//   - the principals Client, Admin, Reader and Server, one per certificate role, whose parent
//     is their Org (ROLE::"ORG/NAME", built from the certificate by [PrincipalRef]);
//   - Task (federation, purpose, modalities), Model and Checkpoint (task, round, released,
//     tainted; a Checkpoint is in its Model);
//   - the actions above, in the groups Train, UseModel and Administer, with the principal and
//     resource types each applies to and their context (modalities for training, purpose for
//     model use).
//
// # The default policies
//
// [DefaultPolicies] (default.cedar, also in examples/policies) denies by default and permits:
// clients of member orgs to Join, SubmitUpdate and ReportEval on the tasks of their
// federation; readers of member orgs to DownloadModel, Infer and Explain released models and
// checkpoints of their federation; admins of member orgs every administrative action on their
// federation, and erasure of the orgs registered with it. It forbids, whatever permits say,
// the use of tainted models and checkpoints, training for a purpose the org has not consented
// to, and bringing a modality the task does not train on. Orgs that are not members can do
// nothing, and servers nothing at all: they are the ones asking.
//
// Cedar's rules hold: deny unless a permit applies, and a forbid that applies overrides every
// permit. One rule is stricter than cedar: a forbid that cannot be evaluated (say, it reads
// an attribute of an entity missing from the data) denies the request rather than being
// skipped, so that missing data never opens a door. Every policy carries a stable
// @id("...") annotation, which names it in decisions, in the audit log and to
// "fedweave policy rm".
//
// # Why membership lives in entity data
//
// Cedar evaluates every policy on every request, so the cost of a decision grows with the
// number of policies, not with the number of orgs. The policies are therefore few and general
// ("principal in resource.federation"), and who is a member, which tasks and models exist and
// which are tainted are entity data ([Entities]), swapped atomically with
// [Authorizer.SetEntities] as the federation changes. A decision with the default policies and
// 10,000 entities takes a few microseconds (BenchmarkDecide).
//
// # Validation
//
// Policies are validated against the schema before they are used or stored, with cedar-go's
// own validator (x/exp/schema/validate, strict mode): a policy that reads resource.taintd is
// refused with a [ValidationError] naming the attribute, the policy's id and its position.
// Entity data is validated too ([Schema.ValidateEntities]).
//
// # The audit log
//
// [AuditLog] is an append-only Merkle tree with RFC 6962 hashing (leaf SHA-256(0x00||entry),
// node SHA-256(0x01||left||right)) in the server's encrypted store (internal/store), with tree
// heads signed by the server's Ed25519 key ([Checkpoint]). It answers inclusion and
// consistency proofs ([AuditLog.InclusionProof], [AuditLog.ConsistencyProof], checked by the
// pure [VerifyInclusion] and [VerifyConsistency]), and [VerifyLog] recomputes everything and
// names the first entry that was changed or removed.
//
// # Where to start
//
// A server builds an [Authorizer] with [New] (nil schema and policies mean the defaults) and
// entity data from [Federation.Entities] or [ParseEntities], and calls [Authorizer.Decide] in
// its interceptor, with [ActionForMethod] for the action; [AuditEvent] says what to log of a
// decision. Policy changes go through a [PolicyStore], which versions them and logs each
// change; [Authorizer.SetPolicies] then puts the new version in force. Offline, [LoadDir]
// loads a directory such as examples/policies, as "fedweave policy check" does.
//
// What it does not do: the gRPC interceptor and the admin service (server wires them), the
// clients' own sharing policy (client), retention timers, and publishing checkpoints to
// outside witnesses.
package policy
