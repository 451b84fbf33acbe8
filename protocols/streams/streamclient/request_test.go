package streamclient

import (
	"errors"
	"testing"
)

func TestParseRequest(t *testing.T) {
	good := []byte(`{"url":"ws://n1:8080/api/v1/streams/ab","authorizationToken":"tok"}`)
	cases := []struct {
		name    string
		topic   string
		payload []byte
		want    Request
		err     bool
	}{
		{"ok", "$iothub/streams/POST/ssh/?$rid=7", good, Request{Name: "ssh", RID: "7", URL: "ws://n1:8080/api/v1/streams/ab", Token: "tok"}, false},
		{"wss", "$iothub/streams/POST/web/?$rid=a%20b", []byte(`{"url":"wss://h/x","authorizationToken":"t"}`), Request{Name: "web", RID: "a b", URL: "wss://h/x", Token: "t"}, false},
		{"method topic", "$iothub/methods/POST/ssh/?$rid=7", good, Request{}, true},
		{"no rid", "$iothub/streams/POST/ssh/?", good, Request{}, true},
		{"no name", "$iothub/streams/POST//?$rid=1", good, Request{}, true},
		{"two levels", "$iothub/streams/POST/a/b/?$rid=1", good, Request{}, true},
		{"bad json", "$iothub/streams/POST/ssh/?$rid=1", []byte(`{`), Request{}, true},
		{"http url", "$iothub/streams/POST/ssh/?$rid=1", []byte(`{"url":"http://h/x","authorizationToken":"t"}`), Request{}, true},
		{"no token", "$iothub/streams/POST/ssh/?$rid=1", []byte(`{"url":"ws://h/x"}`), Request{}, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseRequest(tc.topic, tc.payload)
			if tc.err {
				if !errors.Is(err, ErrBadRequest) {
					t.Fatalf("err %v, want ErrBadRequest", err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("got %+v %v, want %+v", got, err, tc.want)
			}
		})
	}
}

func FuzzParseRequest(f *testing.F) {
	f.Add("$iothub/streams/POST/ssh/?$rid=7", []byte(`{"url":"ws://n1:8080/api/v1/streams/ab","authorizationToken":"tok"}`))
	f.Add("$iothub/streams/POST/x/?$rid=%zz", []byte(`null`))
	f.Fuzz(func(t *testing.T, topic string, payload []byte) {
		r, err := ParseRequest(topic, payload)
		if err != nil {
			if !errors.Is(err, ErrBadRequest) {
				t.Fatalf("error %v does not wrap ErrBadRequest", err)
			}
			return
		}
		if r.Name == "" || r.RID == "" || r.Token == "" || r.URL == "" {
			t.Fatalf("accepted an incomplete request %+v", r)
		}
		// The answer's topic carries the same rid.
		back, err := ParseRequest("$iothub/streams/POST/"+r.Name+"/?$rid="+ResponseTopic(200, r.RID)[len("$iothub/streams/res/200/?$rid="):], payload)
		if err != nil || back.RID != r.RID {
			t.Fatalf("rid %q did not survive its response topic: %+v %v", r.RID, back, err)
		}
	})
}

func TestParseTargets(t *testing.T) {
	got, err := ParseTargets("ssh=127.0.0.1:22, web=localhost:8080")
	if err != nil || len(got) != 2 || got["ssh"] != "127.0.0.1:22" || got["web"] != "localhost:8080" {
		t.Fatalf("got %v %v", got, err)
	}
	for _, bad := range []string{"", "ssh", "ssh=127.0.0.1", "=1.2.3.4:5", "a/b=h:1", "ssh=h:1,ssh=h:2"} {
		if _, err := ParseTargets(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
