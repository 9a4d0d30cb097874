package bolt

import (
	"sort"

	"github.com/imqtt/imqtt/storage"
)

func sortTokens(ts []storage.Token) {
	sort.SliceStable(ts, func(i, j int) bool { return ts[i].Created.Before(ts[j].Created) })
}
