package tcp

// NodeKeys is testNodeKeys for the package's external tests.
var NodeKeys = testNodeKeys
