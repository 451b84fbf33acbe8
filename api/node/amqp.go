package node

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/twinmesh/twinmesh/persistence"
)

// storedTags reads a device's tags from this node's store, for AMQP route
// conditions: the member that routes a device's events hosts its grain,
// whose commits reach this store before their events are published. A
// device without a stored twin has no tags.
func storedTags(db *persistence.DB, id string) (map[string]any, error) {
	raw, err := db.GetTwin(id)
	if errors.Is(err, persistence.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var doc struct {
		Tags map[string]any `json:"tags"`
	}
	if err := json.Unmarshal(raw, &doc); err != nil {
		return nil, fmt.Errorf("twin %s: %w", id, err)
	}
	return doc.Tags, nil
}
