// Command tlogcheck checks an auditlog deployment with the Go project's own transparency
// log packages (golang.org/x/mod/sumdb/note and sumdb/tlog), code nobody at auditlog wrote:
//
//   - the latest checkpoint (GET /v1/log/checkpoint) is a signed note verified by the log's
//     verifier key (note.Open);
//   - the hash tiles (GET /v1/log/tile/<L>/<N>[.p/<W>]) are read by tlog.TileHashReader,
//     which authenticates every tile against the checkpoint's root hash;
//   - for each -leaf, the entry from its bundle (GET /v1/log/tile/entries/<N>) hashes to the
//     leaf in the tiles (tlog.RecordHash), and an inclusion proof computed from the tiles
//     (tlog.ProveRecord) verifies (tlog.CheckRecord);
//   - with -old, a consistency proof from that saved checkpoint to the latest one, computed
//     from the tiles (tlog.ProveTree), verifies (tlog.CheckTree).
//
// It prints one JSON object and exits 0, or prints the failure and exits 1.
//
// Built by the tests with Debian's golang-go and golang-golang-x-mod-dev:
//
//	GO111MODULE=off GOPATH=/usr/share/gocode go build -o tlogcheck ./tests/interop/tlogcheck
package main

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

const height = 8 // C2SP tlog-tiles: tiles of 2^8 hashes

type client struct {
	base    string
	token   string
	http    *http.Client
	fetched int
}

func (c *client) get(path string) ([]byte, error) {
	req, err := http.NewRequest("GET", c.base+"/v1/log/"+path, nil)
	if err != nil {
		return nil, err
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s: %s", path, resp.Status, body)
	}
	c.fetched++
	return body, nil
}

// c2spPath turns tlog's "tile/8/L/N[.p/W]" into C2SP's "tile/L/N[.p/W]" (the height is
// fixed at 8 there, and not spelled).
func c2spPath(t tlog.Tile) string {
	return strings.Replace(t.Path(), fmt.Sprintf("tile/%d/", height), "tile/", 1)
}

// tileReader is a tlog.TileReader over the log's HTTP API.
type tileReader struct{ c *client }

func (r tileReader) Height() int { return height }

func (r tileReader) ReadTiles(tiles []tlog.Tile) ([][]byte, error) {
	out := make([][]byte, len(tiles))
	for i, t := range tiles {
		data, err := r.c.get(c2spPath(t))
		if err != nil {
			return nil, err
		}
		out[i] = data
	}
	return out, nil
}

func (r tileReader) SaveTiles([]tlog.Tile, [][]byte) {}

type checkpoint struct {
	Origin string `json:"origin"`
	Size   int64  `json:"size"`
	Root   string `json:"root"`
	hash   tlog.Hash
}

// openCheckpoint verifies a checkpoint note with the log's key and reads its three lines.
func openCheckpoint(msg []byte, verifier note.Verifier) (checkpoint, error) {
	n, err := note.Open(msg, note.VerifierList(verifier))
	if err != nil {
		return checkpoint{}, fmt.Errorf("note.Open: %v", err)
	}
	lines := strings.Split(strings.TrimSuffix(n.Text, "\n"), "\n")
	if len(lines) < 3 {
		return checkpoint{}, fmt.Errorf("a checkpoint has three lines: %q", n.Text)
	}
	size, err := strconv.ParseInt(lines[1], 10, 64)
	if err != nil {
		return checkpoint{}, err
	}
	hash, err := tlog.ParseHash(lines[2])
	if err != nil {
		return checkpoint{}, err
	}
	if lines[0] != verifier.Name() {
		return checkpoint{}, fmt.Errorf("origin %q is not the key's name %q", lines[0], verifier.Name())
	}
	return checkpoint{Origin: lines[0], Size: size, Root: lines[2], hash: hash}, nil
}

type inclusion struct {
	Index     int64  `json:"index"`
	LeafHash  string `json:"leaf_hash"`
	Entry     string `json:"entry"`
	ProofLen  int    `json:"proof_hashes"`
	BundleLen int    `json:"bundle_entries"`
}

type consistency struct {
	Old      int64 `json:"old"`
	ProofLen int   `json:"proof_hashes"`
}

type result struct {
	Checkpoint   checkpoint   `json:"checkpoint"`
	TreeHash     string       `json:"tree_hash_from_tiles"`
	Inclusions   []inclusion  `json:"inclusions"`
	Consistency  *consistency `json:"consistency,omitempty"`
	TilesFetched int          `json:"requests"`
}

// entry reads leaf i's entry from its bundle: big-endian uint16 length-prefixed entries.
func entry(c *client, size, i int64) ([]byte, int, error) {
	n := i / (1 << height)
	width := size - n*(1<<height)
	if width > 1<<height {
		width = 1 << height
	}
	t := tlog.Tile{H: height, L: 0, N: n, W: int(width)}
	path := strings.Replace(c2spPath(t), "tile/0/", "tile/entries/", 1)
	data, err := c.get(path)
	if err != nil {
		return nil, 0, err
	}
	var entries [][]byte
	for r := bytes.NewReader(data); r.Len() > 0; {
		var length uint16
		if err := binary.Read(r, binary.BigEndian, &length); err != nil {
			return nil, 0, err
		}
		e := make([]byte, length)
		if _, err := io.ReadFull(r, e); err != nil {
			return nil, 0, err
		}
		entries = append(entries, e)
	}
	if int64(len(entries)) != width {
		return nil, 0, fmt.Errorf("bundle %s has %d entries, not %d", path, len(entries), width)
	}
	return entries[i-n*(1<<height)], len(entries), nil
}

func run() (*result, error) {
	base := flag.String("url", "", "the log's API, e.g. http://127.0.0.1:8080")
	token := flag.String("token", "", "a read key's token")
	vkey := flag.String("vkey", "", "the log's verifier key (name+keyid+base64)")
	old := flag.String("old", "", "a saved checkpoint file: prove the latest extends it")
	leaves := flag.String("leaves", "", "comma-separated leaf indexes to prove")
	flag.Parse()

	verifier, err := note.NewVerifier(*vkey)
	if err != nil {
		return nil, fmt.Errorf("note.NewVerifier: %v", err)
	}
	c := &client{base: strings.TrimSuffix(*base, "/"), token: *token, http: &http.Client{Timeout: 30 * time.Second}}
	msg, err := c.get("checkpoint")
	if err != nil {
		return nil, err
	}
	latest, err := openCheckpoint(msg, verifier)
	if err != nil {
		return nil, err
	}
	tree := tlog.Tree{N: latest.Size, Hash: latest.hash}
	hashes := tlog.TileHashReader(tree, tileReader{c})
	th, err := tlog.TreeHash(tree.N, hashes)
	if err != nil {
		return nil, fmt.Errorf("tlog.TreeHash: %v", err)
	}
	if th != tree.Hash {
		return nil, fmt.Errorf("the tiles give root %v, the checkpoint says %v", th, tree.Hash)
	}
	res := &result{Checkpoint: latest, TreeHash: th.String(), Inclusions: []inclusion{}}

	for _, field := range strings.Split(*leaves, ",") {
		if field == "" {
			continue
		}
		i, err := strconv.ParseInt(field, 10, 64)
		if err != nil {
			return nil, err
		}
		data, count, err := entry(c, tree.N, i)
		if err != nil {
			return nil, err
		}
		leaf := tlog.RecordHash(data)
		stored, err := hashes.ReadHashes([]int64{tlog.StoredHashIndex(0, i)})
		if err != nil {
			return nil, fmt.Errorf("leaf %d from the tiles: %v", i, err)
		}
		if stored[0] != leaf {
			return nil, fmt.Errorf("entry %d hashes to %v, its tile says %v", i, leaf, stored[0])
		}
		proof, err := tlog.ProveRecord(tree.N, i, hashes)
		if err != nil {
			return nil, fmt.Errorf("tlog.ProveRecord(%d, %d): %v", tree.N, i, err)
		}
		if err := tlog.CheckRecord(proof, tree.N, tree.Hash, i, leaf); err != nil {
			return nil, fmt.Errorf("tlog.CheckRecord(%d): %v", i, err)
		}
		res.Inclusions = append(res.Inclusions, inclusion{
			Index: i, LeafHash: leaf.String(), Entry: base64.StdEncoding.EncodeToString(data),
			ProofLen: len(proof), BundleLen: count,
		})
	}

	if *old != "" {
		saved, err := os.ReadFile(*old)
		if err != nil {
			return nil, err
		}
		previous, err := openCheckpoint(saved, verifier)
		if err != nil {
			return nil, fmt.Errorf("the saved checkpoint: %v", err)
		}
		proof, err := tlog.ProveTree(tree.N, previous.Size, hashes)
		if err != nil {
			return nil, fmt.Errorf("tlog.ProveTree(%d, %d): %v", tree.N, previous.Size, err)
		}
		if err := tlog.CheckTree(proof, tree.N, tree.Hash, previous.Size, previous.hash); err != nil {
			return nil, fmt.Errorf("tlog.CheckTree(%d -> %d): %v", previous.Size, tree.N, err)
		}
		res.Consistency = &consistency{Old: previous.Size, ProofLen: len(proof)}
	}
	res.TilesFetched = c.fetched
	return res, nil
}

func main() {
	res, err := run()
	if err != nil {
		fmt.Fprintln(os.Stderr, "tlogcheck:", err)
		os.Exit(1)
	}
	json.NewEncoder(os.Stdout).Encode(res)
}
