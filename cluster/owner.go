package cluster

// Owns reports whether this member owns key: it is the first live member in
// rendezvous order (the order grains are placed by, over every member
// whatever kinds it hosts). Work that one member must do for the cluster —
// running a fleet job — is done by the owner of its key; when the owner
// dies the next member in that order owns it and takes the work over.
func (p *Placement) Owns(key string) bool {
	return p.ownerOf(key, "") == p.self
}
