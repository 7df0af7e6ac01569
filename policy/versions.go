package policy

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/fedweave/fedweave/internal/store"
)

// ErrNoVersion means the policy store holds no such version; from [PolicyStore.Current], that
// it holds none yet.
var ErrNoVersion = errors.New("policy: no such policy version")

// A PolicyStore keeps the versions of a federation's policy set in the server's store. Every
// change makes a new version, numbered from 1; versions are never changed or deleted, and a
// rollback is a new version equal to an old one. Each change is recorded in the audit log, in
// the same transaction, so that no change goes unlogged.
//
// Its methods are safe for concurrent use.
type PolicyStore struct {
	st     *store.Store
	schema *Schema
	log    *AuditLog
}

// A Version is one version of the policy set.
type Version struct {
	Number uint64
	// Author is who made the change, as a principal URI.
	Author string
	Time   time.Time
	// Change is "apply", "rollback" or "remove".
	Change string
	// From is the version restored by a rollback; Removed the policy removed by a remove.
	From    uint64
	Removed string
	// SHA256 is the hex SHA-256 of the text of Policies.
	SHA256   string
	Policies *PolicySet
}

// record is a Version as stored.
type record struct {
	Number  uint64    `json:"number"`
	Author  string    `json:"author"`
	Time    time.Time `json:"time"`
	Change  string    `json:"change"`
	From    uint64    `json:"from,omitempty"`
	Removed string    `json:"removed,omitempty"`
	SHA256  string    `json:"sha256"`
	Text    string    `json:"text"`
}

const (
	policyHeadKey   = "policy/head"
	policyVersionPr = "policy/v/"
)

func versionKey(n uint64) []byte { return append([]byte(policyVersionPr), be64(n)...) }

// NewPolicyStore returns the policy store kept in st, whose sets are validated against schema
// (nil: [DefaultSchema]) and whose changes are appended to log. log must keep its entries in
// st too, so that a change and its audit event commit together.
func NewPolicyStore(st *store.Store, schema *Schema, log *AuditLog) (*PolicyStore, error) {
	if schema == nil {
		schema = DefaultSchema()
	}
	if log == nil || log.st != st {
		return nil, errors.New("policy: the policy store needs an audit log in the same store")
	}
	return &PolicyStore{st: st, schema: schema, log: log}, nil
}

// versionName is the name a stored set is parsed with, for positions in errors.
func versionName(n uint64) string { return "version " + strconv.FormatUint(n, 10) }

// Apply validates text as the whole new policy set and, if it is valid, stores it as the next
// version. A set that does not parse or validate changes nothing; the error is then a
// *[ValidationError] whose positions are lines of text.
func (p *PolicyStore) Apply(text []byte, author string) (Version, error) {
	ps, err := ParsePolicies("", text)
	if err != nil {
		return Version{}, err
	}
	if err := p.schema.Validate(ps); err != nil {
		return Version{}, err
	}
	return p.commit(ps, author, "apply", 0, "")
}

// Remove stores, as the next version, the current set less the policy with the given id and
// the comment lines right above it.
func (p *PolicyStore) Remove(id, author string) (Version, error) {
	cur, err := p.Current()
	if err != nil {
		return Version{}, err
	}
	ps, err := cur.Policies.Without(id)
	if err != nil {
		return Version{}, err
	}
	if err := p.schema.Validate(ps); err != nil {
		return Version{}, err
	}
	return p.commit(ps, author, "remove", 0, id)
}

// Rollback stores version to as the next version. The old set is validated against the
// schema again, since the schema may have changed since.
func (p *PolicyStore) Rollback(to uint64, author string) (Version, error) {
	old, err := p.Get(to)
	if err != nil {
		return Version{}, err
	}
	if err := p.schema.Validate(old.Policies); err != nil {
		return Version{}, fmt.Errorf("policy: version %d no longer validates: %w", to, err)
	}
	return p.commit(old.Policies, author, "rollback", to, "")
}

func (p *PolicyStore) commit(ps *PolicySet, author, change string, from uint64, removed string) (Version, error) {
	text := ps.Text()
	sum := sha256.Sum256(text)
	var v Version
	p.log.mu.Lock()
	defer p.log.mu.Unlock()
	err := retry(func() error {
		return p.st.Update(func(tx *store.Tx) error {
			head, err := readHead(tx.Get)
			if err != nil {
				return err
			}
			rec := record{
				Number: head + 1, Author: author, Time: time.Now().UTC(), Change: change,
				From: from, Removed: removed, SHA256: hex.EncodeToString(sum[:]), Text: string(text),
			}
			b, err := json.Marshal(rec)
			if err != nil {
				return err
			}
			if err := tx.Put(versionKey(rec.Number), b); err != nil {
				return err
			}
			if err := tx.Put([]byte(policyHeadKey), be64(rec.Number)); err != nil {
				return err
			}
			details := map[string]string{
				"version":  strconv.FormatUint(rec.Number, 10),
				"change":   change,
				"sha256":   rec.SHA256,
				"policies": strings.Join(ps.IDs(), " "),
			}
			if from != 0 {
				details["from"] = strconv.FormatUint(from, 10)
			}
			if removed != "" {
				details["removed"] = removed
			}
			if _, err := p.log.appendTx(tx, Event{
				Time: rec.Time, Type: EventPolicyChange, Principal: author,
				Action: "ChangePolicy", Decision: "allow", Details: details,
			}); err != nil {
				return err
			}
			v, err = rec.version()
			return err
		})
	})
	return v, err
}

func readHead(get getter) (uint64, error) {
	b, err := get([]byte(policyHeadKey))
	if errors.Is(err, store.ErrNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	if len(b) != 8 {
		return 0, errors.New("policy: the stored policy head is malformed")
	}
	return binary.BigEndian.Uint64(b), nil
}

func (r record) version() (Version, error) {
	ps, err := ParsePolicies(versionName(r.Number), []byte(r.Text))
	if err != nil {
		return Version{}, fmt.Errorf("policy: stored version %d does not parse: %w", r.Number, err)
	}
	return Version{
		Number: r.Number, Author: r.Author, Time: r.Time, Change: r.Change, From: r.From,
		Removed: r.Removed, SHA256: r.SHA256, Policies: ps,
	}, nil
}

// Current returns the latest version, or [ErrNoVersion] when there is none yet (a server then
// applies [DefaultPolicies]).
func (p *PolicyStore) Current() (Version, error) {
	head, err := readHead(p.st.Get)
	if err != nil {
		return Version{}, err
	}
	if head == 0 {
		return Version{}, ErrNoVersion
	}
	return p.Get(head)
}

// Get returns version n, or an error matching [ErrNoVersion].
func (p *PolicyStore) Get(n uint64) (Version, error) {
	b, err := p.st.Get(versionKey(n))
	if errors.Is(err, store.ErrNotFound) {
		return Version{}, fmt.Errorf("%w: %d", ErrNoVersion, n)
	}
	if err != nil {
		return Version{}, err
	}
	var r record
	if err := json.Unmarshal(b, &r); err != nil || r.Number != n {
		return Version{}, fmt.Errorf("policy: stored version %d is malformed", n)
	}
	return r.version()
}

// List returns every version, oldest first.
func (p *PolicyStore) List() ([]Version, error) {
	var out []Version
	err := p.st.Scan([]byte(policyVersionPr), func(key, val []byte) error {
		var r record
		if err := json.Unmarshal(val, &r); err != nil {
			return fmt.Errorf("policy: stored version %x is malformed", key)
		}
		v, err := r.version()
		if err != nil {
			return err
		}
		out = append(out, v)
		return nil
	})
	return out, err
}
