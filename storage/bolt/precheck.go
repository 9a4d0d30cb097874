package bolt

import (
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"io"
	"os"

	"github.com/imqtt/imqtt"
)

// precheck reads an existing file's two bbolt meta pages before bbolt maps
// it: a truncated or garbage file must give ErrStoreCorrupt, while bbolt
// would read past the end of the mapping and die of SIGBUS, which no
// recover catches.
func precheck(path string) error {
	f, err := os.Open(path)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	if st.Size() == 0 {
		// bbolt would make a new store of it; a store cut to nothing must
		// not come back silently empty.
		return fmt.Errorf("%w: file is empty (remove it to start a new store)", imqtt.ErrStoreCorrupt)
	}
	const metaOff, metaLen = 16, 64
	read := func(off int64) (pageSize uint32, pgid, txid uint64, ok bool) {
		b := make([]byte, metaLen)
		if _, err := f.ReadAt(b, off+metaOff); err != nil && err != io.EOF {
			return 0, 0, 0, false
		}
		if binary.LittleEndian.Uint32(b[0:4]) != 0xED0CDAED || binary.LittleEndian.Uint32(b[4:8]) != 2 {
			return 0, 0, 0, false
		}
		h := fnv.New64a()
		_, _ = h.Write(b[:56])
		if h.Sum64() != binary.LittleEndian.Uint64(b[56:64]) {
			return 0, 0, 0, false
		}
		return binary.LittleEndian.Uint32(b[8:12]), binary.LittleEndian.Uint64(b[40:48]), binary.LittleEndian.Uint64(b[48:56]), true
	}
	ps, pgid, txid, ok0 := read(0)
	size := int64(os.Getpagesize())
	if ok0 {
		size = int64(ps)
	}
	ps1, pgid1, txid1, ok1 := read(size)
	switch {
	case !ok0 && !ok1:
		return fmt.Errorf("%w: not a bbolt file, or both meta pages are damaged", imqtt.ErrStoreCorrupt)
	case ok1 && (!ok0 || txid1 > txid):
		ps, pgid = ps1, pgid1
	}
	if need := int64(pgid) * int64(ps); st.Size() < need {
		return fmt.Errorf("%w: file is truncated (%d bytes, its meta page needs %d)", imqtt.ErrStoreCorrupt, st.Size(), need)
	}
	return nil
}
