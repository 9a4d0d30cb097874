package broker_test

import (
	"testing"
	"time"

	"github.com/imqtt/imqtt"
	"github.com/imqtt/imqtt/broker/brokertest"
)

func TestSysOperatorOnly(t *testing.T) {
	for _, v5 := range []bool{false, true} {
		t.Run(map[bool]string{false: "3.1.1", true: "5.0"}[v5], func(t *testing.T) {
			b := brokertest.Start(t, nil)
			b.AddUser("root", "pw-root", imqtt.RoleOperator)
			b.Users("alice")
			refused := byte(0x80)
			if v5 {
				refused = 0x87
			}

			op := b.Connect(t, "root", v5)
			if code, err := op.Subscribe("$SYS/#", 0); err != nil || code != 0 {
				t.Fatalf("operator $SYS/#: code %x err %v", code, err)
			}
			// mochi retains the $SYS topics, so the subscription gets them at
			// once rather than at the next resend interval.
			if m := op.NextOn(t, "$SYS/broker/version"); len(m.Payload) == 0 {
				t.Fatal("empty $SYS/broker/version")
			}
			filters := []string{"$SYS/#", "$SYS/broker/version", "$SYS/+/+"}
			// Paho 3.1.1 files a $share SUBACK under the filter without its
			// prefix, so brokertest cannot read it back there.
			if v5 {
				if code, err := op.Subscribe("$share/ops/$SYS/#", 0); err != nil || code != refused {
					t.Fatalf("operator shared $SYS: code %x err %v", code, err)
				}
				filters = append(filters, "$share/g/#", "$share/g/$SYS/#")
			}

			alice := b.Connect(t, "alice", v5)
			for _, f := range filters {
				if code, err := alice.Subscribe(f, 0); err != nil || code != refused {
					t.Fatalf("user %s: code %x err %v, want %x", f, code, err, refused)
				}
			}
			// mochi writes retained messages right after the SUBACK of their
			// subscription, on the same connection: once a later SUBACK is
			// back, any $SYS message would be on its way.
			if code, err := alice.Subscribe("im/u/alice/#", 1); err != nil || code != 1 {
				t.Fatalf("user inbox: code %x err %v", code, err)
			}
			alice.Quiet(t, 300*time.Millisecond)
		})
	}
}
