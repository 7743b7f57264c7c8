// pgjdbc against a running Joinery: DatabaseMetaData (getTables, getColumns, getSchemas),
// server-side prepared statements, binary transfer, errors. Run by tests/it/clients.rs:
//   java -cp /usr/share/java/postgresql.jar JdbcClientTest.java <port>
import java.sql.*;
import java.util.*;

public class JdbcClientTest {
    static void check(boolean cond, String msg) {
        if (!cond) {
            System.err.println("FAILED: " + msg);
            System.exit(1);
        }
    }

    public static void main(String[] args) throws Exception {
        String url = "jdbc:postgresql://127.0.0.1:" + args[0] + "/joinery?user=demo&prepareThreshold=1";
        try (Connection c = DriverManager.getConnection(url)) {
            DatabaseMetaData md = c.getMetaData();
            check(md.getDatabaseProductVersion().startsWith("16"), "version " + md.getDatabaseProductVersion());

            List<String> schemas = new ArrayList<>();
            try (ResultSet rs = md.getSchemas()) {
                while (rs.next()) schemas.add(rs.getString("TABLE_SCHEM"));
            }
            check(schemas.contains("demo"), "schemas " + schemas);

            List<String> tables = new ArrayList<>();
            try (ResultSet rs = md.getTables(null, "demo", "%", new String[] {"TABLE"})) {
                while (rs.next()) tables.add(rs.getString("TABLE_NAME"));
            }
            check(tables.equals(List.of("customers", "orders", "types")), "tables " + tables);

            List<String> cols = new ArrayList<>();
            String remarks = null;
            try (ResultSet rs = md.getColumns(null, "demo", "customers", "%")) {
                while (rs.next()) {
                    cols.add(rs.getString("COLUMN_NAME") + ":" + rs.getString("TYPE_NAME"));
                    if ("arr".equals(rs.getString("COLUMN_NAME"))) remarks = rs.getString("REMARKS");
                }
            }
            check(cols.equals(List.of("id:int8", "name:text", "region:text", "plan:text",
                    "created_at:timestamptz", "arr:numeric")), "columns " + cols);
            check("Annual recurring revenue in USD".equals(remarks), "remarks " + remarks);

            // Server-side prepared statement (prepareThreshold=1), executed several times.
            try (PreparedStatement ps = c.prepareStatement(
                    "SELECT id, name, arr, created_at FROM demo.customers WHERE id = ? AND region <> ?")) {
                for (long id = 1; id <= 3; id++) {
                    ps.setLong(1, id);
                    ps.setString(2, "nowhere");
                    try (ResultSet rs = ps.executeQuery()) {
                        check(rs.next(), "row for " + id);
                        check(rs.getLong(1) == id, "id " + rs.getLong(1));
                        check(rs.getBigDecimal(3) != null, "numeric");
                        check(rs.getTimestamp(4) != null, "timestamptz");
                    }
                }
            }
            // Errors keep the connection usable.
            try (Statement st = c.createStatement()) {
                try {
                    st.executeQuery("SELECT * FROM demo.nope");
                    check(false, "error expected");
                } catch (SQLException e) {
                    check("42P01".equals(e.getSQLState()), "sqlstate " + e.getSQLState());
                }
                try (ResultSet rs = st.executeQuery("SELECT count(*) FROM demo.orders")) {
                    check(rs.next() && rs.getLong(1) == 500, "count");
                }
            }
            // Transactions.
            c.setAutoCommit(false);
            try (Statement st = c.createStatement(); ResultSet rs = st.executeQuery("SELECT 1")) {
                check(rs.next(), "in transaction");
            }
            c.commit();
        }
        System.out.println("all jdbc checks passed");
    }
}
