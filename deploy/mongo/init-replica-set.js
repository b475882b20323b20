// Healthcheck of the `mongodb` service (docker-compose.scale.yml), run by mongosh every few
// seconds: the first run initiates the single-node replica set `rs0` (majority writes and
// change streams need a replica set); every run exits 0 only once this node is the writable
// primary, so services that depend on MongoDB start only after that.
// The member's host is the Docker service name, which is what clients connecting with
// `?replicaSet=rs0` are redirected to.
try {
  rs.status();
} catch (e) {
  if (e.codeName !== "NotYetInitialized") {
    throw e;
  }
  rs.initiate({ _id: "rs0", members: [{ _id: 0, host: "mongodb:27017" }] });
}
quit(db.hello().isWritablePrimary ? 0 : 1);
